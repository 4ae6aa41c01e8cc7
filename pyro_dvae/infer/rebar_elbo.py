"""REBAR and RELAX: score-function gradients with a learned, reparameterized control variate."""

from __future__ import annotations

import math

import pyro
import torch
import torch.nn.functional as F
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.distributions.util import scale_and_mask, sum_rightmost
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine import Trace
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.util import check_if_enumerated, warn_if_nan
from torch import nn
from torch.distributions import Bernoulli, Categorical, Distribution, OneHotCategorical

from ..errors import DVAEInputError
from .local_latents import (
    broadcast_to_site,
    local_data_plates,
    per_datum_terms,
    require_factorized_guide,
)
from .util import DataPlates, sample_sites

__all__ = ["CONTROL_VARIATES", "RELAXELBO", "linear_log_prob", "relax_gradient"]

#: ``rebar``: eta * f(relaxed z) (Tucker et al. 2017); ``relax``: plus a learned network
CONTROL_VARIATES = ("rebar", "relax")


def _leaf(fn: Distribution) -> Distribution:
    while isinstance(fn, (Independent, ExpandedDistribution, MaskedDistribution)):
        fn = fn.base_dist
    return fn


def linear_log_prob(fn: Distribution, value: torch.Tensor) -> torch.Tensor | None:
    """The log-mass of a ``Bernoulli`` / ``OneHotCategorical`` site extended linearly to relaxed
    values in [0, 1] (``v log p + (1 - v) log(1 - p)``; ``sum_k v_k log p_k``), through any
    nesting of ``.to_event``, ``.expand`` and ``.mask``; equal to ``fn.log_prob`` at hard values.
    ``None`` for other distributions.

    Example:
        >>> import pyro.distributions as dist
        >>> d = dist.Bernoulli(logits=torch.zeros(2, 3)).to_event(1)
        >>> linear_log_prob(d, torch.full((2, 3), 0.5))  # 3 log(1/2) per row
        tensor([-2.0794, -2.0794])
    """
    if isinstance(fn, Independent):
        lp = linear_log_prob(fn.base_dist, value)
        return None if lp is None else sum_rightmost(lp, fn.reinterpreted_batch_ndims)
    if isinstance(fn, ExpandedDistribution):
        return linear_log_prob(fn.base_dist, value)
    if isinstance(fn, MaskedDistribution):
        lp = linear_log_prob(fn.base_dist, value)
        if lp is None or fn._mask is True:
            return lp
        if fn._mask is False:
            return torch.zeros_like(lp)
        return torch.where(fn._mask, lp, torch.zeros_like(lp))
    if isinstance(fn, Bernoulli):
        return value * F.logsigmoid(fn.logits) + (1 - value) * F.logsigmoid(-fn.logits)
    if isinstance(fn, OneHotCategorical):
        return (value * torch.log_softmax(fn.logits, -1)).sum(-1)
    return None


def _logit_of(log_u: torch.Tensor, log_1mu: torch.Tensor) -> torch.Tensor:
    return log_u - log_1mu


class _NoiseMessenger(Messenger):
    """Draws each discrete guide site from reparameterized noise and records, per site, the
    logits ``alpha`` (the tensor the relaxations are differentiated against), the hard value
    ``b = H(z)`` and the relaxed pre-activations ``z`` and ``z~ ~ p(z | b)``."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: dict[str, dict] = {}

    def _pyro_sample(self, msg: dict) -> None:
        fn = msg["fn"]
        if msg["is_observed"] or isinstance(fn, _Subsample) or msg["done"]:
            return
        if getattr(fn, "has_rsample", False):
            raise DVAEInputError(
                f"guide site '{msg['name']}' is reparameterized; REBAR/RELAX handle guides whose "
                "latents are all Bernoulli or OneHotCategorical: use rloo or disarm"
            )
        leaf = _leaf(fn)
        shape = fn.shape()
        if isinstance(leaf, Bernoulli):
            alpha = leaf.logits.expand(shape)
            record = self._bernoulli(alpha)
        elif isinstance(leaf, OneHotCategorical):
            alpha = leaf.logits.expand(shape)
            record = self._categorical(alpha)
        elif isinstance(leaf, Categorical):
            raise DVAEInputError(
                f"guide site '{msg['name']}' is an integer Categorical; REBAR/RELAX relax one-hot "
                "latents: declare it as dist.OneHotCategorical(logits), or use rloo / disarm"
            )
        else:
            raise DVAEInputError(
                f"guide site '{msg['name']}' ({type(leaf).__name__}) is not Bernoulli or "
                "OneHotCategorical, which REBAR/RELAX need: use rloo or disarm"
            )
        record["event_dim"] = fn.event_dim
        self.sites[msg["name"]] = record
        msg["value"] = record["b"]
        msg["done"] = True

    @staticmethod
    def _bernoulli(alpha: torch.Tensor) -> dict:
        tiny = torch.finfo(alpha.dtype).tiny
        u = torch.rand(alpha.shape, dtype=alpha.dtype, device=alpha.device).clamp(tiny, 1 - 1e-7)
        v = torch.rand(alpha.shape, dtype=alpha.dtype, device=alpha.device).clamp(tiny, 1 - 1e-7)
        z = alpha + (u.log() - torch.log1p(-u))
        b = (z > 0).to(alpha.dtype).detach()
        # z~ | b: u conditioned on the side of 1 - sigmoid(alpha) that b says (REBAR, App. C)
        log_t, log_1mt = F.logsigmoid(alpha), F.logsigmoid(-alpha)
        log_a = log_t + torch.log1p(-v)  # b = 1: 1 - u = t (1 - v)
        log_b = log_1mt + v.log()  # b = 0: u = (1 - t) v
        one = _logit_of(torch.log1p(-log_a.exp().clamp(max=1 - 1e-7)), log_a)
        zero = _logit_of(log_b, torch.log1p(-log_b.exp().clamp(max=1 - 1e-7)))
        z_tilde = alpha + torch.where(b > 0, one, zero)
        return {"alpha": alpha, "b": b, "z": z, "z_tilde": z_tilde, "kind": "bernoulli"}

    @staticmethod
    def _categorical(alpha: torch.Tensor) -> dict:
        tiny = torch.finfo(alpha.dtype).tiny
        log_p = torch.log_softmax(alpha, -1)

        def gumbel(shape):
            u = torch.rand(shape, dtype=alpha.dtype, device=alpha.device).clamp(tiny, 1 - 1e-7)
            return -torch.log(-torch.log(u))

        z = log_p + gumbel(alpha.shape)
        b = F.one_hot(z.argmax(-1), alpha.shape[-1]).to(alpha.dtype).detach()
        # z~ | b, top-down: the top is a Gumbel at logsumexp(log_p) = 0, the others truncated
        top = gumbel(alpha.shape[:-1] + (1,))
        others = -torch.logaddexp(-top, -(log_p + gumbel(alpha.shape)))
        z_tilde = torch.where(b > 0, top.expand(alpha.shape), others)
        return {"alpha": alpha, "b": b, "z": z, "z_tilde": z_tilde, "kind": "categorical"}


def _relaxed(record: dict, key: str, temperature: torch.Tensor) -> torch.Tensor:
    z = record[key]
    if record["kind"] == "bernoulli":
        return torch.sigmoid(z / temperature)
    return torch.softmax(z / temperature, -1)


def relax_gradient(
    signal: torch.Tensor, score: torch.Tensor, d_c_z: torch.Tensor, d_c_z_tilde: torch.Tensor
) -> torch.Tensor:
    """The REBAR/RELAX estimate wrt a site's logits: ``(f(b) - c(z~)) * d log q(b) / d alpha +
    d c(z) / d alpha - d c(z~) / d alpha``, from ``signal = f(b) - c(z~)`` (broadcast to the
    site), the score ``d log q(b) / d alpha`` and the control variate's two gradients.

    Example:
        >>> relax_gradient(torch.tensor(2.0), torch.tensor(0.5), torch.tensor(1.0),
        ...                torch.tensor(0.25))
        tensor(1.7500)
    """
    return signal * score + d_c_z - d_c_z_tilde


def _score_gradient(record: dict) -> torch.Tensor:
    """d log q(b | alpha) / d alpha, per unit (detached)."""
    alpha, b = record["alpha"].detach(), record["b"]
    if record["kind"] == "bernoulli":
        return b - torch.sigmoid(alpha)
    return b - torch.softmax(alpha, -1)


class _ResidualNet(nn.Module):
    """RELAX's learned part of the control variate: an MLP from a datum's relaxed codes to a
    scalar."""

    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.net(codes).squeeze(-1)


class RELAXELBO(ELBO):
    """REBAR (Tucker et al. 2017, arXiv:1703.07370) and RELAX (Grathwohl et al. 2018,
    arXiv:1711.00123) estimators of the ELBO gradient for guides with ``Bernoulli`` and
    ``OneHotCategorical`` latents.

    Each discrete guide site draws ``b = H(z)`` from reparameterized noise ``z`` (logistic noise
    for a Bernoulli logit, Gumbel noise for a categorical one) and ``z~ ~ p(z | b)``, also
    reparameterized. With a control variate ``c`` that is differentiable in ``z``, the gradient
    wrt the site's logits ``alpha`` is::

        (f(b) - c(z~)) d log q(b) / d alpha + d c(z) / d alpha - d c(z~) / d alpha

    which is unbiased for any ``c``, where ``f = log p(x, b) - log q(b | x)`` per datum.

    - ``control="rebar"``: ``c(z) = eta * f~(sigma_lambda(z))``, the same ELBO integrand on
      the Concrete relaxation at temperature ``lambda`` (the discrete sites' log-masses
      extended linearly, :func:`linear_log_prob`); ``eta`` and ``log lambda`` are learned.
    - ``control="relax"``: the REBAR term plus an MLP ``r_rho`` of each datum's relaxed codes.

    The control-variate parameters are trained, on every step, by the gradient of the
    estimator's own squared norm over the logits (a single-sample estimate of the gradient of
    its variance, Grathwohl et al. Sec. 3.3): :meth:`loss_and_grads` sets their ``.grad``, so
    SVI's optimizer updates them with the rest (they are registered in Pyro's param store as
    ``{name}_eta``, ``{name}_log_temperature`` and module ``{name}_net``).

    Requirements: every guide latent is a ``Bernoulli`` or ``OneHotCategorical`` (under any
    ``.to_event`` / ``.expand`` / ``.mask``), the guide's discrete sites are independent given
    the data (a factorized encoder: checked with Pyro's provenance tracking), the model's
    computations accept relaxed values of its latents (a decoder that multiplies, not indexes),
    and the guide sites lie inside the data plates. Each refusal is one line.
    Cost: one guide run and three model runs per step (at ``b``, ``sigma(z)``, ``sigma(z~)``),
    plus a double backward pass for the control variate's parameters.

    :param control: one of :data:`CONTROL_VARIATES`.
    :param temperature: initial relaxation temperature ``lambda``.
    :param eta: initial scale of the REBAR term.
    :param hidden: hidden width of RELAX's network.
    :param name: prefix of the control variate's parameters in Pyro's param store.
    :param num_particles: draws per step (averaged).
    :param max_plate_nesting: as for Pyro's ELBOs.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(3)).to_event(1))
        ...         pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)
        >>> def guide(x):
        ...     a = pyro.param("a", torch.zeros(3))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Bernoulli(logits=a).to_event(1))
        >>> elbo = RELAXELBO(control="rebar")
        >>> loss = elbo.loss_and_grads(model, guide, torch.full((4,), 3.0))
        >>> pyro.param("relax_eta").unconstrained().grad is not None
        True
    """

    def __init__(
        self,
        control: str = "relax",
        temperature: float = 0.5,
        eta: float = 1.0,
        hidden: int = 32,
        name: str = "relax",
        num_particles: int = 1,
        max_plate_nesting: float = float("inf"),
    ) -> None:
        if control not in CONTROL_VARIATES:
            raise DVAEInputError(f"control must be one of {CONTROL_VARIATES}, got {control!r}")
        if not float(temperature) > 0:
            raise DVAEInputError(f"temperature must be > 0, got {temperature}; pass e.g. 0.5")
        if int(num_particles) < 1:
            raise DVAEInputError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(num_particles=int(num_particles), max_plate_nesting=max_plate_nesting)
        self.control = control
        self.initial_temperature = float(temperature)
        self.initial_eta = float(eta)
        self.hidden = int(hidden)
        self.name = name
        self.net: _ResidualNet | None = None
        self._checked: set = set()

    # ------------------------------------------------------------------ traces
    def _get_trace(self, model, guide, args, kwargs):
        noise = _NoiseMessenger()
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, noise(guide), args, kwargs
        )
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace, noise.sites

    def _check_factorized(self, guide, args, kwargs) -> None:
        require_factorized_guide(guide, args, kwargs, self._checked, "REBAR/RELAX")

    def _parameters(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        eta = pyro.param(f"{self.name}_eta", lambda: torch.tensor(self.initial_eta))
        log_t = pyro.param(
            f"{self.name}_log_temperature", lambda: torch.tensor(math.log(self.initial_temperature))
        )
        return eta.to(like.dtype), log_t.to(like.dtype)

    # ------------------------------------------------------------------ control variate
    def _relaxed_f(
        self, model, args, kwargs, guide_trace: Trace, values: dict, plates: DataPlates
    ) -> torch.Tensor:
        """Per-datum ``f~ = log p(x, v) - log q(v | x)`` at relaxed values ``v`` of the guide's
        discrete sites (their log-masses extended linearly)."""
        trace = guide_trace.copy()
        for name, value in values.items():
            trace.nodes[name] = dict(trace.nodes[name], value=value)
        with pyro.validation_enabled(False):
            model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=trace)).get_trace(
                *args, **kwargs
            )
        total = 0.0
        for site in sample_sites(model_trace):
            if site["is_observed"]:
                with pyro.validation_enabled(False):
                    lp = site["fn"].log_prob(site["value"])
            else:
                lp = linear_log_prob(site["fn"], site["value"])
                if lp is None:
                    raise DVAEInputError(
                        f"model site '{site['name']}' ({type(_leaf(site['fn'])).__name__}) has no "
                        "relaxed log-density; REBAR/RELAX need Bernoulli or OneHotCategorical "
                        "latents in the model too: use rloo or disarm"
                    )
            total = total + plates.reduce(scale_and_mask(lp, site["scale"], site["mask"]), lead=0)
        for name, value in values.items():
            site = guide_trace.nodes[name]
            lp = linear_log_prob(site["fn"], value)
            total = total - plates.reduce(scale_and_mask(lp, site["scale"], site["mask"]), lead=0)
        return torch.as_tensor(total)

    def _codes(self, values: dict, plates: DataPlates) -> torch.Tensor:
        parts = []
        for name, value in values.items():
            try:
                parts.append(value.reshape(plates.num_data, -1))
            except RuntimeError:
                raise DVAEInputError(
                    f"guide site '{name}' of shape {tuple(value.shape)} does not split into the "
                    f"{plates.num_data} data; RELAX's network reads each datum's codes: use "
                    "control='rebar'"
                ) from None
        return torch.cat(parts, -1)

    def _control_variate(self, model, args, kwargs, guide_trace, sites, key, plates, eta, log_t):
        temperature = log_t.exp()
        values = {name: _relaxed(rec, key, temperature) for name, rec in sites.items()}
        c = eta * self._relaxed_f(model, args, kwargs, guide_trace, values, plates)
        if self.control == "relax":
            codes = self._codes(values, plates)
            if self.net is None:
                self.net = _ResidualNet(codes.shape[-1], self.hidden).to(codes)
            c = c + pyro.module(f"{self.name}_net", self.net)(codes)
        return c

    # ------------------------------------------------------------------ estimate
    def _particle(self, model, guide, args, kwargs):
        """One draw: the surrogate for model and guide parameters, the variance loss for the
        control variate's parameters, and the ELBO estimate."""
        self._check_factorized(guide, args, kwargs)
        model_trace, guide_trace, sites = self._get_trace(model, guide, args, kwargs)
        plates = local_data_plates(model_trace, guide_trace, lead=0, name="RELAX")
        f, _ = per_datum_terms(model_trace, guide_trace, plates, lead=0, detach_discrete_log_q=True)
        if not sites:
            return f.sum(), None, f.detach().sum()
        eta, log_t = self._parameters(f)
        c_z = self._control_variate(
            model, args, kwargs, guide_trace, sites, "z", plates, eta, log_t
        )
        c_zt = self._control_variate(
            model, args, kwargs, guide_trace, sites, "z_tilde", plates, eta, log_t
        )
        alphas = [rec["alpha"] for rec in sites.values()]
        d_cz = torch.autograd.grad(c_z.sum(), alphas, create_graph=True, allow_unused=True)
        d_czt = torch.autograd.grad(c_zt.sum(), alphas, create_graph=True, allow_unused=True)
        signal = f.detach() - c_zt  # [num_data]
        surrogate = f.sum()
        variance = 0.0
        for rec, g1, g2 in zip(sites.values(), d_cz, d_czt):
            grad = relax_gradient(
                broadcast_to_site(signal, plates, rec["event_dim"]),
                _score_gradient(rec),
                _or_zero(g1, rec["alpha"]),
                _or_zero(g2, rec["alpha"]),
            )
            surrogate = surrogate + (grad.detach() * rec["alpha"]).sum()
            variance = variance + grad.pow(2).sum()
        return surrogate, variance, f.detach().sum()

    def _control_parameters(self) -> list[torch.Tensor]:
        store = pyro.get_param_store()
        params = [
            store.get_param(f"{self.name}_eta").unconstrained(),
            store.get_param(f"{self.name}_log_temperature").unconstrained(),
        ]
        if self.control == "relax" and self.net is not None:
            params += list(self.net.parameters())
        return params

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """``-ELBO`` from ``num_particles`` draws; sets the gradients of the model and guide
        parameters (the REBAR/RELAX estimate) and of the control variate's parameters (the
        gradient of the estimate's squared norm)."""
        value, surrogate, variance = 0.0, 0.0, 0.0
        for _ in range(self.num_particles):
            s, v, elbo = self._particle(model, guide, args, kwargs)
            surrogate = surrogate + s / self.num_particles
            value = value + elbo / self.num_particles
            if v is not None:
                variance = variance + v / self.num_particles
        if torch.is_tensor(variance) and variance.requires_grad:
            params = self._control_parameters()
            grads = torch.autograd.grad(variance, params, retain_graph=True, allow_unused=True)
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad = g.detach() if p.grad is None else p.grad + g.detach()
        if torch.is_tensor(surrogate) and surrogate.requires_grad:
            (-surrogate).backward()
        loss = -torch_item(value)
        warn_if_nan(loss, "loss")
        return loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        """``-ELBO`` estimated from ``num_particles`` hard draws, summed over data."""
        total = 0.0
        with torch.no_grad():
            for model_trace, guide_trace, _ in (
                self._get_trace(model, guide, args, kwargs) for _ in range(self.num_particles)
            ):
                plates = local_data_plates(model_trace, guide_trace, lead=0, name="RELAX")
                f, _ = per_datum_terms(model_trace, guide_trace, plates, lead=0)
                total += torch_item(f.sum())
        loss = -total / self.num_particles
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        raise DVAEInputError(
            "REBAR/RELAX train their control variate from the variance of their own gradient "
            "(a double backward pass) and have no single surrogate loss; use loss_and_grads "
            "(SVI, TorchOptimSVI) and no DistributedDataParallel"
        )


def _or_zero(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad
