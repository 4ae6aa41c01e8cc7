"""An ELBO's loss and gradients captured once as a graph of tensor operations, then replayed.

Each step of Pyro's SVI re-runs the model and the guide under its effect handlers: tracing,
``pyro.module`` registering parameters, building distribution objects, packing log-densities.
For a VAE on a CPU that fixed Python cost is a large share of a step. :class:`CapturedStep`
runs the ELBO's ``differentiable_loss`` and ``torch.autograd.grad`` once under
``torch.fx.experimental.proxy_tensor.make_fx``, which records the ATen operations actually
executed (forward and backward), and replays that graph on later steps with the new batch:
random operations (Gumbel noise, Concrete samples) are recorded as operations, so each replay
draws fresh noise from the global generator, exactly as the eager step would.

It is exact: for the same noise, the same loss and gradients as the eager step (tested, and
checked at run time: the first replay of every graph, and every ``check_every``-th step, is
compared with an eager step on the same random numbers; a mismatch turns capture off with a
one-line warning and the eager result is used). It is safe where the structure of the
computation is a function of what it keys on: the shapes, dtypes and devices of the tensor
arguments, the values of the other arguments, the ELBO's numeric settings (``temperature``,
``kl_weight``, ...) and the parameter tensors themselves. A new key is captured after it has
been seen on two consecutive steps (so a schedule that changes every step runs eagerly, one
that changes every few hundred steps is re-captured at the cost of about one step).

With ``compile=True`` (``TorchOptimSVI(capture="compiled")``, ``--compile compiled``) a graph
is also compiled by inductor (``torch._inductor.compile_fx``, C++ kernels on CPU) at its first
replay, and later replays run the compiled code: it fuses the elementwise work that the plain
replay runs op by op (~2/3 of the plain replay's time on the 20x10 benchmark step), but costs
tens of seconds of compilation per graph, so it pays off only for long runs: ``capture="auto"``
compiles only when told that at least :data:`AUTO_COMPILE_STEPS` steps will share the graph's
settings (``TorchOptimSVI(steady_steps=...)``, which the trainer passes for a run with a
constant temperature; ``benchmarks/RESULTS.md`` has the numbers). Random operations stay
calls to ATen's own random ops (inductor's ``fallback_random``), so each replay draws fresh
noise from the global generator and the same generator state gives the same numbers as the
eager step. Inductor reassociates sums and fuses operations, so a compiled replay agrees with
the eager step to float32 rounding, not bit for bit: its run-time check uses
:data:`COMPILED_RTOL` and :data:`COMPILED_ATOL` (relative to the largest entry of each
gradient) instead of the plain replay's tolerances. A graph that fails to compile is replayed
uncompiled, with a one-line warning.

Sound only for ELBOs without Python-side state between steps: :class:`GumbelSoftmaxELBO` and its
straight-through, Gumbel-Rao and ReinMax variants, and Pyro's ``Trace_ELBO``. Not for the
score-function family (decaying-average baselines live in Python), the enumeration ELBOs (their
structure pass saves and restores the RNG), or estimators with second-order terms.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from unittest import mock

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO, Trace_ELBO
from pyro.infer.util import torch_item
from pyro.util import warn_if_nan

from .gumbel_rao_elbo import GumbelRaoELBO
from .gumbel_softmax_elbo import GumbelSoftmaxELBO
from .reinmax_elbo import ReinMaxELBO

__all__ = [
    "AUTO_COMPILE_STEPS",
    "CAPTURE_MODES",
    "COMPILED_ATOL",
    "COMPILED_RTOL",
    "CapturedStep",
    "supports_capture",
]

CAPTURE_MODES = ("auto", "on", "off", "compiled")
#: run-time check of a compiled replay against the eager step on the same noise: the loss to
#: ``COMPILED_RTOL * max(1, |loss|)``, each gradient entry to
#: ``COMPILED_RTOL * |eager| + COMPILED_ATOL * max |eager gradient|`` (inductor sums in
#: another order and fuses; measured differences are ~1e-6 relative, see the tests)
COMPILED_RTOL = 1e-4
COMPILED_ATOL = 1e-4
#: ``TorchOptimSVI(capture="auto", steady_steps=...)`` compiles from this many steady steps: about
#: twice the break-even measured on the benchmark step (25-42 s of compilation against 3-4.5 ms
#: saved per step at batch 100 on one loaded CPU thread: 7,000-10,000 steps)
AUTO_COMPILE_STEPS = 20_000
#: at most this many graphs are compiled (each costs seconds to tens of seconds); later keys
#: are replayed uncompiled
MAX_COMPILED = 4
_SOUND = (GumbelSoftmaxELBO, GumbelRaoELBO, ReinMaxELBO, Trace_ELBO)


def supports_capture(elbo: ELBO) -> bool:
    """Whether ``elbo``'s step can be captured and replayed exactly (see the module notes).

    Example:
        >>> supports_capture(GumbelSoftmaxELBO()), supports_capture(pyro.infer.TraceGraph_ELBO())
        (True, False)
    """
    return type(elbo) in _SOUND


class CapturedStep:
    """``loss_and_grads`` of ``elbo`` on ``model``/``guide``, replayed from captured graphs.

    :param elbo: the ELBO (see :func:`supports_capture`).
    :param model, guide: the Pyro functions.
    :param check_every: compare a replay with an eager step every this many replays (and always
        on a graph's first replay); 0 checks the first replay only.
    :param compile: compile each graph with inductor at its first replay and replay the
        compiled code (see the module notes); falls back to the plain replay if compiling fails.

    Call :meth:`loss_and_grads` with the parameters to differentiate (the tensors the optimizer
    updates in place) and the step's arguments; it returns the loss and accumulates the
    gradients into ``.grad``, like ``elbo.loss_and_grads``.

    Example:
        >>> import pyro.distributions as dist
        >>> loc = torch.zeros(3, requires_grad=True)
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)
        >>> step = CapturedStep(pyro.infer.Trace_ELBO(), model, lambda x: None)
        >>> losses = [step.loss_and_grads([loc], torch.ones(5, 3)) for _ in range(3)]
        >>> step.num_graphs, losses[0] == losses[2]
        (1, True)
    """

    def __init__(
        self,
        elbo: ELBO,
        model: Callable,
        guide: Callable,
        check_every: int = 100,
        compile: bool = False,
    ) -> None:
        self.elbo, self.model, self.guide = elbo, model, guide
        self.check_every = check_every
        self.enabled = supports_capture(elbo)
        self.compile = compile
        self._graphs: dict[tuple, tuple] = {}  # key -> (graph, present)
        self._compiled: dict[tuple, Callable] = {}  # key -> compiled replay
        self._resume_replays = False  # a resumed run: the last key was being replayed
        self._checked: set[tuple] = set()
        self._last_key: str | None = None  # the last step's key, without parameter ids
        self._replays = 0
        self._calls = 0
        self.num_replays = 0
        #: replays that ran compiled code
        self.num_compiled_replays = 0
        #: the parameters seen by the last capture (a Pyro trace), for the caller to register
        self.param_trace = None

    def state_dict(self) -> dict:
        """What decides the next step's path (eager, capture or replay), for checkpoints: a
        resumed run then takes the same path as an uninterrupted one (replayed and eager steps
        agree to float32 rounding, not bit for bit, so the path matters for bitwise resume)."""
        # whether the next step replays (compiled code, if compiling) rather than captures
        replaying = any(_portable(k) == self._last_key for k in self._graphs)
        return {"last_key": self._last_key, "replaying": replaying}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self._last_key = state.get("last_key")
        self._resume_replays = bool(state.get("replaying", False))

    @property
    def num_graphs(self) -> int:
        """How many graphs have been captured (one per key)."""
        return len(self._graphs)

    def loss_and_grads(self, params: list[torch.Tensor], *args, **kwargs) -> float:
        self._calls += 1
        key = self._key(params, args, kwargs) if self.enabled else None
        portable = None if key is None else _portable(key)
        previous, self._last_key = self._last_key, portable
        if key is None:
            return self._eager(*args, **kwargs)
        self.param_trace = None
        entry = self._graphs.get(key)
        if entry is None:
            if portable != previous:  # seen once: wait until it is stable
                return self._eager(*args, **kwargs)
            if self._thrashing():
                return self._eager(*args, **kwargs)
            resumed, self._resume_replays = self._resume_replays, False
            before = torch.random.get_rng_state() if resumed and self.compile else None
            if self._capture(key, params, args, kwargs) is None:
                return self._eager(*args, **kwargs)
            if before is None or key not in self._graphs:
                loss, grads = self._outputs
                params = params + self._new_params
                _accumulate(params, grads)
                return float(loss)
            # a resumed run whose uninterrupted twin replayed compiled code at this step: do
            # the same on the same noise (bitwise resume)
            torch.random.set_rng_state(before)
            entry = self._graphs[key]
        self._resume_replays = False
        return self._replay(key, entry, params, args, kwargs)

    # ---------------------------------------------------------------- internals ---------
    def _replay(self, key, entry, params, args, kwargs) -> float:
        graph, present = entry
        self._replays += 1
        run = self._compiled.get(key)
        tensors = _tensors(args, kwargs)
        if run is None and self.compile and len(self._compiled) < MAX_COMPILED:
            run = self._compile(key, graph, tensors)
        compiled = run is not None
        if not compiled:
            run = graph
        check = key not in self._checked or (
            self.check_every and self._replays % self.check_every == 0
        )
        state = torch.random.get_rng_state() if check else None
        with torch.no_grad():  # the graph holds the backward pass already
            outputs = run(*tensors)
        loss, grads = outputs[0], _expand(outputs[1:], present)
        if check and not self._agrees(state, params, args, kwargs, loss, grads, compiled):
            return self._eager_after_replay(state, *args, **kwargs)
        self._checked.add(key)
        self.num_replays += 1
        self.num_compiled_replays += compiled
        _accumulate(params, grads)
        return float(loss)

    def _compile(self, key, graph, tensors) -> Callable | None:
        """Inductor's compiled code for ``graph``, called like it; ``None`` (and compiling off,
        with a warning) if it cannot be compiled. The graph's tensor attributes (the
        parameters, read by reference) become inputs, so that nothing is baked in as a
        constant: an optimizer step in place is seen by the next replay."""
        try:
            from torch._inductor import config
            from torch._inductor.compile_fx import compile_fx

            lifted, constants = _lift_constants(graph)
            with torch.no_grad(), config.patch(fallback_random=True):
                inner = compile_fx(lifted, constants + list(tensors))
        except Exception as error:  # noqa: BLE001 - the plain replay is always there
            self.compile = False
            message = str(error).strip().splitlines()
            warnings.warn(
                f"compiled replay is off ({type(error).__name__}: "
                f"{message[0][:120] if message else ''}); replaying the captured graph uncompiled",
                stacklevel=4,
            )
            return None

        def run(*tensors):
            return inner(*constants, *tensors)

        self._compiled[key] = run
        if len(self._compiled) == MAX_COMPILED:
            warnings.warn(
                f"{MAX_COMPILED} graphs compiled: graphs of further shapes or settings are "
                "replayed uncompiled",
                stacklevel=4,
            )
        return run

    def _thrashing(self) -> bool:
        """A new graph every few steps (a setting that changes every other step) costs more
        than it saves: after 4 captures, stop when they are over 1 in 20 steps."""
        if len(self._graphs) < 4 or len(self._graphs) * 20 <= self._calls:
            return False
        self.enabled = False
        warnings.warn(
            f"step capture is off: {len(self._graphs)} graphs in {self._calls} steps (a "
            "setting or shape changes too often to replay); training continues eagerly",
            stacklevel=4,
        )
        return True

    def _eager(self, *args, **kwargs) -> float:
        with poutine.trace(param_only=True) as seen:
            loss = self.elbo.loss_and_grads(self.model, self.guide, *args, **kwargs)
        self.param_trace = seen.trace
        return loss

    def _eager_after_replay(self, state, *args, **kwargs) -> float:
        torch.random.set_rng_state(state)
        return self._eager(*args, **kwargs)

    def _key(self, params, args, kwargs) -> tuple:
        settings = tuple(
            sorted(
                (k, v)
                for k, v in vars(self.elbo).items()
                if isinstance(v, (bool, int, float, str)) or v is None
            )
        )
        return (
            tuple(_describe(a) for a in args),
            tuple(sorted((k, _describe(v)) for k, v in kwargs.items())),
            settings,
            tuple(id(p) for p in params),
            torch.is_grad_enabled(),
        )

    def _capture(self, key, params, args, kwargs):
        from torch.fx.experimental.proxy_tensor import make_fx

        names = list(kwargs)
        n_args = len([a for a in args if torch.is_tensor(a)])
        known = {id(p) for p in params}
        stash: list = []

        def step(*tensors):
            call_args, call_kwargs = _substitute(args, kwargs, names, tensors, n_args)
            with poutine.trace(param_only=True) as seen:
                loss = self.elbo.differentiable_loss(
                    self.model, self.guide, *call_args, **call_kwargs
                )
            # parameters first created in this step are differentiated too (and reported)
            new = [
                site["value"].unconstrained()
                for site in seen.trace.nodes.values()
                if site["type"] == "param" and id(site["value"].unconstrained()) not in known
            ]
            grads = torch.autograd.grad(loss, params + new, allow_unused=True)
            present = tuple(g is not None for g in grads)
            outputs = (loss.detach(),) + tuple(g for g in grads if g is not None)
            stash[:] = [outputs, present, new, seen.trace]
            return outputs

        try:
            with _capturable(), pyro.validation_enabled(False):
                graph = make_fx(step)(*_tensors(args, kwargs))
        except Exception as error:  # noqa: BLE001 - anything that cannot be captured runs eagerly
            self.enabled = False
            warnings.warn(
                f"step capture is off ({type(error).__name__}: "
                f"{str(error).strip().splitlines()[0][:120]}); training continues eagerly",
                stacklevel=3,
            )
            return None
        outputs, present, new, self.param_trace = stash
        # make_fx ran every operation for real: its outputs are this step's result
        self._outputs = (outputs[0], _expand(outputs[1:], present))
        self._new_params = new
        if not new:  # with new parameters the key changes: the next steps capture again
            self._graphs[key] = (graph, present)
        return graph

    def _agrees(self, state, params, args, kwargs, loss, grads, compiled=False) -> bool:
        after = torch.random.get_rng_state()
        torch.random.set_rng_state(state)
        saved = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            eager_loss = self._eager(*args, **kwargs)
            eager = [p.grad for p in params]
        finally:
            for p, g in zip(params, saved):
                p.grad = g
        torch.random.set_rng_state(after)
        same = _close(eager_loss, loss, grads, eager, compiled)
        if not same and compiled:  # drop compiling; the plain replay may still be exact
            self.compile = False
            self._compiled.clear()
            self._checked.clear()  # the plain replays were never checked: check each first
            warnings.warn(
                "compiled replay is off: a compiled step differed from the eager one beyond "
                f"rtol={COMPILED_RTOL}, atol={COMPILED_ATOL}; replaying uncompiled",
                stacklevel=3,
            )
            return False
        if not same:
            self.enabled = False
            warnings.warn(
                "step capture is off: a replayed step differed from the eager one (data-dependent "
                "control flow in the model or guide?); training continues eagerly",
                stacklevel=3,
            )
        return same


def _portable(key: tuple) -> str:
    """The key without the parameters' ids (which change from process to process)."""
    return repr(key[:3] + key[4:])


def _close(eager_loss, loss, grads, eager, compiled) -> bool:
    """The replay's loss and gradients against the eager step's (same noise)."""
    if compiled:
        rtol, atol, loss_rtol = COMPILED_RTOL, COMPILED_ATOL, COMPILED_RTOL
    else:
        rtol, atol, loss_rtol = 1e-4, 1e-6, 1e-5
    if abs(eager_loss - float(loss)) > loss_rtol * max(1.0, abs(eager_loss)):
        return False
    for g, e in zip(grads, eager):
        if (g is None) != (e is None):
            return False
        if g is None:
            continue
        scale = float(e.abs().max()) if compiled and e.numel() else 1.0
        if not torch.allclose(g, e, rtol=rtol, atol=atol * scale):
            return False
    return True


def _lift_constants(graph):
    """A copy of ``graph`` whose tensor attributes are leading inputs, and those tensors (the
    same objects, not copies)."""
    import torch.fx as fx

    g = fx.Graph()
    env: dict = {}
    constants: list[torch.Tensor] = []
    lifted: dict[str, fx.Node] = {}
    for node in graph.graph.nodes:
        if node.op == "get_attr" and node.target not in lifted:
            value = getattr(graph, node.target)
            if torch.is_tensor(value):
                lifted[node.target] = g.placeholder(f"const_{len(constants)}")
                constants.append(value)
    for node in graph.graph.nodes:
        if node.op == "get_attr" and node.target in lifted:
            env[node] = lifted[node.target]
        else:
            env[node] = g.node_copy(node, lambda n: env[n])
    return fx.GraphModule(graph, g), constants


def _describe(value) -> object:
    if torch.is_tensor(value):
        return ("tensor", tuple(value.shape), value.dtype, value.device, value.requires_grad)
    return ("value", repr(value))


def _tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    return [a for a in args if torch.is_tensor(a)] + [
        kwargs[k] for k in kwargs if torch.is_tensor(kwargs[k])
    ]


def _substitute(args, kwargs, names, tensors, n_args):
    it = iter(tensors[:n_args])
    call_args = tuple(next(it) if torch.is_tensor(a) else a for a in args)
    it = iter(tensors[n_args:])
    call_kwargs = {k: next(it) if torch.is_tensor(kwargs[k]) else kwargs[k] for k in names}
    return call_args, call_kwargs


def _expand(grads, present: tuple[bool, ...]) -> list[torch.Tensor | None]:
    """Gradients in parameter order, ``None`` where the parameter took no part (as in eager)."""
    it = iter(grads)
    return [next(it) if here else None for here in present]


def _accumulate(params: list[torch.Tensor], grads) -> None:
    for p, g in zip(params, grads):
        if g is None:
            continue
        if g.stride() != p.stride():  # e.g. a weight's gradient as a transposed view: give it
            g = torch.empty_like(p).copy_(g)  # the parameter's layout, as autograd does
        p.grad = g if p.grad is None else p.grad + g


def _tensor_item(x):
    # a Python float is a double: keep the captured sum in float64 too, so the loss value is
    # the same number the eager step reports
    return x.detach().double() if torch.is_tensor(x) else x


def _no_nan_check(value, *args, **kwargs):
    return value


@contextlib.contextmanager
def _capturable() -> Iterator[None]:
    """Pyro's ELBOs read the loss as a Python number (``torch_item``) and check it for NaN;
    while capturing, the number stays a tensor (its value is the graph's first output)."""
    with contextlib.ExitStack() as stack:
        for module in list(sys.modules.values()):
            if getattr(module, "torch_item", None) is torch_item:
                stack.enter_context(mock.patch.object(module, "torch_item", _tensor_item))
            if getattr(module, "warn_if_nan", None) is warn_if_nan:
                stack.enter_context(mock.patch.object(module, "warn_if_nan", _no_nan_check))
        yield
