"""Gradient estimators against the exact gradient: bias, variance, MSE and cosine similarity.

The exact gradient is that of the discrete ELBO summed over every latent configuration
(:class:`~pyro_dvae.infer.EnumeratedELBO`), so it needs a small enough latent space. Every
gradient here is the gradient of the *loss* (the negative ELBO), i.e. what an ELBO's
``loss_and_grads`` accumulates into ``.grad`` and what SVI descends, taken with respect to the
unconstrained parameters. Parameters are grouped ("encoder"/"decoder" by default) and each group's
gradients are flattened into one vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import ELBO
from torch import nn

from ..errors import DVAEInputError
from ..infer.enumerated_elbo import EnumeratedELBO
from ..infer.enumeration import DEFAULT_MAX_CONFIGURATIONS

__all__ = [
    "GradientDiagnostics",
    "compare_gradients",
    "default_group",
    "exact_gradient",
    "gradient_diagnostics",
    "gradient_estimates",
    "preserved_param_store",
]

ParamSpec = nn.Module | Iterable[str] | None
GroupSpec = Mapping[str, str] | Callable[[str], str] | None
_DIVIDER = "$$$"  # pyro.module's separator between module name and parameter name


@dataclass(frozen=True)
class GradientDiagnostics:
    """Monte Carlo gradient estimates of one parameter group, compared with the exact gradient.

    :ivar bias: ``||mean_s g_s - g||``, the norm of the mean estimate's error.
    :ivar bias_se: its noise level ``sqrt(variance / S)``: an unbiased estimator gives
        ``bias`` of this order, shrinking like ``1 / sqrt(S)``.
    :ivar cosine: cosine similarity between the mean estimate and the exact gradient.
    :ivar variance: trace of the covariance of one estimate (unbiased, over the S samples).
    :ivar mse: ``mean_s ||g_s - g||^2``, the mean squared error of one estimate.
    :ivar exact_norm: ``||g||``, to put the others on scale.

    Example:
        >>> d = compare_gradients({"w": torch.tensor([[1.0], [3.0]])}, {"w": torch.tensor([2.0])})
        >>> d["w"].bias, d["w"].variance, d["w"].num_samples
        (0.0, 2.0, 2)
    """

    group: str
    num_samples: int
    bias: float
    bias_se: float
    cosine: float
    variance: float
    mse: float
    exact_norm: float
    temperature: float | None = None


def default_group(name: str, in_guide: bool = False, in_model: bool = True) -> str:
    """The default group of a parameter: by name for :class:`~pyro_dvae.models.DiscreteVAE`
    (``encoder``; ``decoder``, ``prior_logits``, ``log_scale`` -> ``"decoder"``), else
    ``"encoder"`` for parameters only the guide uses and ``"decoder"`` for the rest.

    Example:
        >>> default_group("discrete_vae$$$encoder.0.weight"), default_group("prior_logits")
        ('encoder', 'decoder')
    """
    short = name.rsplit(_DIVIDER, 1)[-1]
    if "encoder" in short:
        return "encoder"
    if any(key in short for key in ("decoder", "prior_logits", "log_scale")):
        return "decoder"
    return "encoder" if in_guide and not in_model else "decoder"


class _ParamSet:
    """Named leaf tensors, their groups, and the flattening of gradients by group."""

    def __init__(self, tensors: dict[str, torch.Tensor], groups: dict[str, str]) -> None:
        self.tensors = tensors
        self.groups = groups

    def flatten(self, grads: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, list[torch.Tensor]] = {}
        for name in self.tensors:
            out.setdefault(self.groups[name], []).append(grads[name].reshape(-1))
        return {group: torch.cat(parts) for group, parts in out.items()}

    def grads(self) -> dict[str, torch.Tensor]:
        return {
            name: torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
            for name, p in self.tensors.items()
        }


def _as_args(data) -> tuple:
    return data if isinstance(data, tuple) else (data,)


def _resolve(model, guide, args, kwargs, params: ParamSpec, groups: GroupSpec) -> _ParamSet:
    with torch.no_grad():
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
    in_guide = [n for n, s in guide_trace.nodes.items() if s["type"] == "param"]
    in_model = [n for n, s in model_trace.nodes.items() if s["type"] == "param"]
    store = dict(pyro.get_param_store().named_parameters())  # unconstrained leaf tensors
    found = list(dict.fromkeys(in_guide + in_model))
    if isinstance(params, nn.Module):
        by_id = {id(store[n]): n for n in found if n in store}
        names = {m: by_id.get(id(p), m) for m, p in params.named_parameters() if p.requires_grad}
        tensors = dict(params.named_parameters())
        tensors = {m: tensors[m] for m in names}
    else:
        wanted = found if params is None else list(params)
        names, tensors = {}, {}
        for want in wanted:
            match = [n for n in found if n == want] or [
                n for n in found if n.rsplit(_DIVIDER, 1)[-1] == want
            ]
            if len(match) != 1:
                raise DVAEInputError(
                    f"parameter {want!r} {'is ambiguous' if match else 'was not found'} among "
                    f"the model's and guide's parameters ({', '.join(found) or 'none'})"
                )
            names[want], tensors[want] = match[0], store[match[0]]
    if not tensors:
        raise DVAEInputError("no parameters to differentiate: the model and guide have none")

    def group_of(key: str) -> str:
        pyro_name = names[key]
        if callable(groups):
            return str(groups(key))
        if groups is not None:
            for candidate in (key, pyro_name, pyro_name.rsplit(_DIVIDER, 1)[-1]):
                if candidate in groups:
                    return groups[candidate]
        return default_group(pyro_name, pyro_name in in_guide, pyro_name in in_model)

    return _ParamSet(tensors, {key: group_of(key) for key in tensors})


@contextmanager
def _preserved_grads(extra: Iterable[torch.Tensor]):
    """Restore the ``.grad`` of every parameter (store and ``extra``) on exit."""
    store = [p for _, p in pyro.get_param_store().named_parameters()]
    tensors = {id(p): p for p in store + list(extra)}
    saved = {key: p.grad for key, p in tensors.items()}
    try:
        yield
    finally:
        for key, p in tensors.items():
            p.grad = saved[key]


@contextmanager
def preserved_param_store() -> Iterator[Callable[[], None]]:
    """Snapshot Pyro's param store; yield ``restore()``, which puts it back, and restore on exit.

    Restored are the entries (by name, the same unconstrained tensor objects, bitwise the same
    values) and the set of names: entries created since are deleted, replaced or deleted ones
    put back. This is the state an estimator carries between steps: the decaying averages of
    :class:`~pyro_dvae.infer.ScoreFunctionELBO` (``__baseline_avg_downstream_cost_*``, replaced
    on every call) and its learned baselines and control variates (NVIL, REBAR, RELAX: modules
    registered in the store). The estimators keep no other state between calls (only modules
    built on the first call, whose parameters are in the store). Gradients (``.grad``) and the
    RNG are not touched.

    Example:
        >>> pyro.clear_param_store()
        >>> _ = pyro.param("avg", torch.zeros(2))
        >>> with preserved_param_store() as restore:
        ...     pyro.get_param_store()["avg"] = torch.ones(2)  # replaced, as a baseline update
        ...     _ = pyro.param("new", torch.ones(1))
        ...     restore()
        ...     pyro.param("avg").tolist(), "new" in pyro.get_param_store()
        ([0.0, 0.0], False)
    """
    store = pyro.get_param_store()
    state = store.get_state()
    saved = {name: [p, p._version, p.detach().clone()] for name, p in state["params"].items()}

    def restore() -> None:
        current = dict(store.named_parameters())
        for name in current.keys() - saved.keys():
            del store[name]
        with torch.no_grad():
            for name, entry in saved.items():
                tensor, version, value = entry
                if tensor._version != version:  # changed in place
                    tensor.copy_(value)
                    entry[1] = tensor._version
                if current.get(name) is not tensor:  # replaced or deleted
                    if name in current:
                        del store[name]
                    constraint = state["constraints"][name]
                    store.set_state({"params": {name: tensor}, "constraints": {name: constraint}})

    try:
        yield restore
    finally:
        restore()


def _one_gradient(elbo: ELBO, model, guide, args, kwargs, params: _ParamSet):
    for p in params.tensors.values():
        p.grad = None
    elbo.loss_and_grads(model, guide, *args, **kwargs)
    return params.grads()


def exact_gradient(
    model: Callable,
    guide: Callable,
    data,
    params: ParamSpec = None,
    *,
    kwargs: dict | None = None,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
    chunk_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """Exact gradient of the loss ``-ELBO`` (discrete ELBO, :class:`EnumeratedELBO`) per parameter.

    :param data: the model's positional argument, or a tuple of them.
    :param params: ``None`` (every parameter of model and guide, by Pyro name), an
        ``nn.Module`` (its parameters, by the module's names), or Pyro parameter names (a
        ``pyro.module`` parameter may be given by its name inside the module).

    Example:
        >>> from pyro_dvae import DiscreteVAE
        >>> vae = DiscreteVAE(4, "2x2", encoder_hidden=(3,))
        >>> g = exact_gradient(vae.model, vae.guide, torch.ones(2, 4), params=vae)
        >>> g["encoder.0.weight"].shape
        torch.Size([3, 4])
    """
    args, kwargs = _as_args(data), kwargs or {}
    param_set = _resolve(model, guide, args, kwargs, params, None)
    elbo = EnumeratedELBO(max_configurations=max_configurations, chunk_size=chunk_size)
    with _preserved_grads(param_set.tensors.values()):
        return _one_gradient(elbo, model, guide, args, kwargs, param_set)


def gradient_estimates(
    elbo: ELBO,
    model: Callable,
    guide: Callable,
    data,
    num_samples: int = 100,
    params: ParamSpec = None,
    groups: GroupSpec = None,
    *,
    kwargs: dict | None = None,
) -> dict[str, torch.Tensor]:
    """``num_samples`` independent gradient estimates of ``elbo``, flattened per group:
    ``{group: [num_samples, group_size]}`` (gradients of the loss, as in ``.grad``).

    :param groups: a mapping from parameter name (as keyed by :func:`exact_gradient`, or its
        name inside its module) to group, or a callable; unmapped names use
        :func:`default_group`.

    Example:
        >>> from pyro_dvae import DiscreteVAE
        >>> from pyro_dvae.infer import GumbelSoftmaxELBO
        >>> vae = DiscreteVAE(4, "2x2", encoder_hidden=(3,))
        >>> est = gradient_estimates(GumbelSoftmaxELBO(0.5), vae.model, vae.guide,
        ...                          torch.ones(2, 4), num_samples=3)
        >>> sorted(est), est["encoder"].shape
        (['decoder', 'encoder'], torch.Size([3, 31]))
    """
    if int(num_samples) < 1:
        raise DVAEInputError(f"num_samples must be >= 1, got {num_samples}")
    args, kwargs = _as_args(data), kwargs or {}
    param_set = _resolve(model, guide, args, kwargs, params, groups)
    samples = []
    with _preserved_grads(param_set.tensors.values()), preserved_param_store() as restore:
        for _ in range(int(num_samples)):
            restore()  # every estimate from the state the caller left (e.g. training's)
            grads = _one_gradient(elbo, model, guide, args, kwargs, param_set)
            samples.append(param_set.flatten(grads))
    return {group: torch.stack([s[group] for s in samples]) for group in samples[0]}


def compare_gradients(
    estimates: Mapping[str, torch.Tensor],
    exact: Mapping[str, torch.Tensor],
    temperature: float | None = None,
) -> dict[str, GradientDiagnostics]:
    """Diagnostics of per-group estimates ``[S, D]`` against per-group exact gradients ``[D]``.

    Example:
        >>> d = compare_gradients({"g": torch.tensor([[1.0, 0.0], [3.0, 0.0]])},
        ...                       {"g": torch.tensor([2.0, 0.0])})
        >>> d["g"].bias, d["g"].variance, d["g"].mse, d["g"].cosine
        (0.0, 2.0, 1.0, 1.0)
    """
    out = {}
    for group, samples in estimates.items():
        samples = samples.detach().double()
        target = exact[group].detach().double().reshape(-1)
        s = samples.shape[0]
        mean = samples.mean(0)
        variance = float(samples.var(0, unbiased=True).sum()) if s > 1 else math.nan
        norms = float(mean.norm() * target.norm())
        out[group] = GradientDiagnostics(
            group=group,
            num_samples=s,
            bias=float((mean - target).norm()),
            bias_se=math.sqrt(variance / s) if s > 1 else math.nan,
            cosine=float(mean @ target) / norms if norms > 0 else math.nan,
            variance=variance,
            mse=float(((samples - target) ** 2).sum(-1).mean()),
            exact_norm=float(target.norm()),
            temperature=temperature,
        )
    return out


def gradient_diagnostics(
    elbo: ELBO,
    model: Callable,
    guide: Callable,
    data,
    num_samples: int = 100,
    params: ParamSpec = None,
    groups: GroupSpec = None,
    temperatures: Iterable[float] | None = None,
    *,
    exact: Mapping[str, torch.Tensor] | None = None,
    kwargs: dict | None = None,
    max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
) -> dict[str, GradientDiagnostics] | dict[float, dict[str, GradientDiagnostics]]:
    """Bias, its standard error, cosine, variance and MSE of ``elbo``'s gradient estimator per
    parameter group, against the exact discrete-ELBO gradient (or ``exact``, per parameter
    name, e.g. the gradient of another objective).

    With ``temperatures`` (relaxed estimators: ``elbo.temperature`` is set to each in turn and
    restored afterwards) the result is ``{temperature: {group: diagnostics}}``; otherwise
    ``{group: diagnostics}``.

    Example:
        >>> from pyro_dvae import DiscreteVAE
        >>> from pyro_dvae.infer import GumbelSoftmaxELBO
        >>> vae = DiscreteVAE(4, "2x2", encoder_hidden=(3,))
        >>> out = gradient_diagnostics(GumbelSoftmaxELBO(kl="analytic"), vae.model, vae.guide,
        ...                            torch.ones(2, 4), num_samples=4, temperatures=[1.0, 0.5])
        >>> sorted(out[0.5])
        ['decoder', 'encoder']
    """
    args, kwargs = _as_args(data), kwargs or {}
    param_set = _resolve(model, guide, args, kwargs, params, groups)
    if exact is None:
        exact = exact_gradient(
            model, guide, args, params, kwargs=kwargs, max_configurations=max_configurations
        )
    exact_groups = param_set.flatten(exact)

    def run(temperature: float | None) -> dict[str, GradientDiagnostics]:
        est = gradient_estimates(
            elbo, model, guide, args, num_samples, params, groups, kwargs=kwargs
        )
        return compare_gradients(est, exact_groups, temperature)

    if temperatures is None:
        return run(None)
    if not hasattr(elbo, "temperature"):
        raise DVAEInputError(
            f"{type(elbo).__name__} has no temperature; pass temperatures only for relaxed "
            "estimators (GumbelSoftmaxELBO, GumbelRaoELBO, ReinMaxELBO)"
        )
    original = elbo.temperature
    try:
        results = {}
        for t in temperatures:
            elbo.temperature = float(t)
            results[float(t)] = run(float(t))
        return results
    finally:
        elbo.temperature = original
