"""SVI driven by one ``torch.optim`` optimizer over all parameters, with Pyro's ELBO machinery.

:class:`pyro.infer.SVI` wraps every parameter in its own PyTorch optimizer (``pyro.optim``
keeps one per parameter), which costs a Python round trip per parameter per step. For the
networks of a VAE that overhead is a large share of a step on CPU (measured in
``benchmarks/bench_step.py``). :class:`TorchOptimSVI` keeps Pyro's semantics (the ELBO's
``loss_and_grads`` computes the loss and gradients; every ``pyro.param`` seen during a step is
optimized, in its unconstrained form) but steps a single ``torch.optim`` optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO

from ..errors import DVAEInputError
from .captured_step import AUTO_COMPILE_STEPS, CAPTURE_MODES, CapturedStep, supports_capture

__all__ = ["TorchOptimSVI"]


class TorchOptimSVI:
    """Stochastic variational inference with one ``torch.optim`` optimizer.

    :param model: Pyro model.
    :param guide: Pyro guide.
    :param optim_factory: called once with the list of unconstrained parameters found on the
        first step, returns a ``torch.optim.Optimizer`` (e.g. ``lambda ps: torch.optim.Adam(ps)``).
        Parameters that first appear on a later step are added as a new parameter group.
    :param loss: a Pyro :class:`~pyro.infer.ELBO` (any of this package's, or Pyro's own).
    :param capture: ``"auto"`` (default): after the first steps, replay the ELBO's loss and
        gradients from a captured graph of tensor operations instead of re-running Pyro's
        effect handlers (:class:`~pyro_dvae.infer.captured_step.CapturedStep`; exact, checked
        against eager steps) where the ELBO allows it, eagerly otherwise; ``"on"``: the same,
        but an ELBO that does not allow it is an error; ``"compiled"``: as ``"on"``, and each
        captured graph is also compiled by inductor at its first replay (tens of seconds per
        graph, then ~2/3 of the plain replay's time: for long runs; checked against eager
        steps at a float tolerance); ``"off"``: always eager. ``"auto"`` compiles too when
        ``steady_steps`` says the run is long enough to pay for it.
    :param steady_steps: a hint: how many steps this SVI will take with the same settings
        and batch shape (what a captured graph is keyed on). With ``capture="auto"``, at least
        :data:`~pyro_dvae.infer.captured_step.AUTO_COMPILE_STEPS` turns compiling on: its tens
        of seconds are then a small share of the time saved (``benchmarks/RESULTS.md``).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.tensor(0.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        >>> def guide(x):
        ...     pass
        >>> svi = TorchOptimSVI(model, guide, lambda ps: torch.optim.Adam(ps, lr=0.1),
        ...                     pyro.infer.Trace_ELBO())
        >>> for _ in range(200):
        ...     _ = svi.step(torch.full((10,), 3.0))
        >>> round(pyro.param("loc").item(), 1)
        3.0
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim_factory: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
        loss: ELBO,
        capture: str = "auto",
        steady_steps: int | None = None,
    ) -> None:
        if not hasattr(loss, "loss_and_grads"):
            raise DVAEInputError(
                f"loss must be a Pyro ELBO with loss_and_grads, got {type(loss).__name__}"
            )
        if capture not in CAPTURE_MODES:
            raise DVAEInputError(
                f"capture must be one of {', '.join(CAPTURE_MODES)}, got {capture!r}"
            )
        if capture in ("on", "compiled") and not supports_capture(loss):
            raise DVAEInputError(
                f"{type(loss).__name__} keeps state between steps, so its step cannot be "
                "captured and replayed; use capture='auto' or 'off'"
            )
        self.model, self.guide, self.loss = model, guide, loss
        self.capture = capture
        replayable = type(self)._loss_and_grads is TorchOptimSVI._loss_and_grads
        self._captured = (
            CapturedStep(loss, model, guide, compile=_compiles(capture, steady_steps))
            if capture != "off" and replayable and supports_capture(loss)
            else None
        )
        self._optim_factory = optim_factory
        self.optimizer: torch.optim.Optimizer | None = None
        self._params: dict[str, torch.Tensor] = {}  # param store name -> optimized tensor

    def _sync_params(self, trace: poutine.Trace) -> None:
        new = []
        for name, site in trace.nodes.items():
            if site["type"] != "param":
                continue
            p = site["value"].unconstrained()
            old = self._params.get(name)
            if old is p:
                continue
            self._params[name] = p
            if old is None:
                new.append(p)
            else:  # the param store replaced the value (e.g. Pyro's decaying-average baselines)
                self._swap(old, p)
        if not new:
            return
        if self.optimizer is None:
            self.optimizer = self._optim_factory(new)
        else:
            self.optimizer.add_param_group({"params": new})

    def _swap(self, old: torch.Tensor, new: torch.Tensor) -> None:
        for group in self.optimizer.param_groups:
            group["params"] = [new if q is old else q for q in group["params"]]
        if old in self.optimizer.state:
            self.optimizer.state[new] = self.optimizer.state.pop(old)

    def compute_grads(self, *args, **kwargs) -> float:
        """The loss, with its gradients left in ``.grad`` and no update applied yet.

        Follow with :meth:`apply_grads` (what :meth:`step` does) or :meth:`zero_grad` (to skip
        the update, e.g. when a gradient is not finite).
        """
        if self._captured is not None and self.optimizer is not None and self._captured.enabled:
            loss = self._captured.loss_and_grads(list(self._params.values()), *args, **kwargs)
            if self._captured.param_trace is not None:
                self._sync_params(self._captured.param_trace)
            return loss
        with poutine.trace(param_only=True) as param_capture:
            loss = self._loss_and_grads(*args, **kwargs)
        self._sync_params(param_capture.trace)
        return float(loss)

    def _loss_and_grads(self, *args, **kwargs) -> float:
        """Loss and ``backward``; subclasses change how (e.g. data-parallel), not the rest."""
        return self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs)

    def parameters(self) -> dict[str, torch.Tensor]:
        """The optimized (unconstrained) tensors by param-store name."""
        return dict(self._params)

    def apply_grads(self) -> None:
        """Take the optimizer step with the gradients of :meth:`compute_grads`, then zero them."""
        self.optimizer.step()
        self.zero_grad()

    def zero_grad(self) -> None:
        """Drop the gradients without updating the parameters."""
        if self.optimizer is not None:
            self.optimizer.zero_grad(set_to_none=True)

    def step(self, *args, **kwargs) -> float:
        """One gradient step on the ELBO; returns the loss (negative ELBO estimate)."""
        loss = self.compute_grads(*args, **kwargs)
        self.apply_grads()
        return loss

    def evaluate_loss(self, *args, **kwargs) -> float:
        """The loss without taking a step."""
        with torch.no_grad():
            return float(self.loss.loss(self.model, self.guide, *args, **kwargs))

    def state_dict(self) -> dict:
        """The optimizer's state (for checkpoints), with the param-store name of every parameter.

        ``{"optimizer": torch_optimizer.state_dict(), "param_names": [[name, ...], ...]}`` (one
        list per parameter group); empty before the first step.
        """
        if self.optimizer is None:
            return {}
        names = {id(p): n for n, p in self._params.items()}
        groups = self.optimizer.param_groups
        state = {
            "optimizer": self.optimizer.state_dict(),
            "param_names": [[names[id(p)] for p in g["params"]] for g in groups],
        }
        if self._captured is not None:
            state["capture"] = self._captured.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` before the next step (for resuming a run).

        The parameters are looked up by name in Pyro's param store, which must already hold them
        (load the modules and register them, e.g. with ``pyro.module``, first). The optimizer is
        created here, so the next :meth:`step` continues exactly where the saved run stopped.
        """
        if not state:
            return
        if "optimizer" not in state or "param_names" not in state:
            raise DVAEInputError(
                "optimizer state has no 'optimizer'/'param_names' entries; pass the dict "
                "returned by TorchOptimSVI.state_dict()"
            )
        store = dict(pyro.get_param_store().named_parameters())
        groups = state["param_names"]
        missing = [n for g in groups for n in g if n not in store]
        if missing:
            raise DVAEInputError(
                f"cannot restore the optimizer: parameter(s) {', '.join(missing[:5])} are not in "
                "Pyro's param store; build and register the same model before loading its state"
            )
        self.optimizer, self._params = None, {}
        for names in groups:
            params = [store[n] for n in names]
            self._params.update(zip(names, params, strict=True))
            if self.optimizer is None:
                self.optimizer = self._optim_factory(params)
            else:
                self.optimizer.add_param_group({"params": params})
        if self._captured is not None:
            self._captured.load_state_dict(state.get("capture", {}))
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise DVAEInputError(
                f"optimizer state does not match the model's parameters ({e}); resume with the "
                "configuration the state was saved with"
            ) from None


def _compiles(capture: str, steady_steps: int | None) -> bool:
    """Whether a captured graph is also compiled (``capture="auto"``: for long steady runs)."""
    if capture == "auto":
        return steady_steps is not None and steady_steps >= AUTO_COMPILE_STEPS
    return capture == "compiled"
