"""The unordered set estimator: k latent codes sampled without replacement, with a built-in
baseline (Kool, van Hoof & Welling 2020, arXiv:2002.06043)."""

from __future__ import annotations

import functools
import itertools
import math

import pyro
import torch
import torch.nn.functional as F
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer import ELBO
from pyro.infer.enum import get_importance_trace
from pyro.infer.util import is_validation_enabled
from pyro.poutine import Trace
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from pyro.util import check_if_enumerated
from torch.distributions import Bernoulli, Categorical, Distribution, OneHotCategorical

from ..errors import DVAEInputError
from .local_latents import local_data_plates, per_datum_terms, require_factorized_guide
from .surrogate_loss import SurrogateLossMixin
from .util import DataPlates, sample_sites

__all__ = ["UnorderedSetELBO", "set_log_prob", "stochastic_beam_search", "unordered_set_weights"]


def _log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, stable at both ends."""
    a = a.clamp(max=-1e-30)
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


@functools.cache
def _orders(k: int, device: torch.device) -> torch.Tensor:
    """Every order of k members, ``[k!, k]`` (built once per size and device)."""
    return torch.tensor(list(itertools.permutations(range(k))), device=device)


@functools.cache
def _subsets(k: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Indices of the set without member i (``[k, k - 1]``), the ordered pairs i != j, and the
    set without i and j (``[k (k - 1), k - 2]``), built once per size and device."""
    pairs = [(a, b) for a in range(k) for b in range(k) if a != b]
    without = [[u for u in range(k) if u != a] for a in range(k)]
    rest = [[u for u in range(k) if u not in pair] for pair in pairs]
    i, j = zip(*pairs)
    return tuple(torch.tensor(t, dtype=torch.long, device=device) for t in (without, i, j, rest))


def set_log_prob(log_p: torch.Tensor, excluded: torch.Tensor | None = None) -> torch.Tensor:
    """log-probability that k draws without replacement from a distribution give the set whose
    members have log-probabilities ``log_p`` ``[..., k]`` (any order), when the elements with
    total log-mass ``excluded`` ``[...]`` are removed from the domain first (renormalized):
    a sum over the k! orders of prod_t p_t / (1 - excluded - sum_{u<t} p_u).

    Example:
        >>> p = torch.tensor([0.5, 0.3])  # from {0.5, 0.3, 0.2}: 0.5*0.3/0.5 + 0.3*0.5/0.7
        >>> round(float(set_log_prob(p.log()).exp()), 4)
        0.5143
    """
    k = log_p.shape[-1]
    if excluded is None:
        excluded = torch.full(log_p.shape[:-1], -math.inf, dtype=log_p.dtype, device=log_p.device)
    lp = log_p[..., _orders(k, log_p.device)]  # [..., k!, k]: every order at once
    before = excluded[..., None, None].expand(lp.shape[:-1] + (1,))
    # the mass removed before step t: the excluded elements and the members drawn before t
    removed = torch.logaddexp(before, torch.logcumsumexp(lp, -1)[..., :-1])
    removed = torch.cat([before, removed], -1)
    return (lp - _log1mexp(removed)).sum(-1).logsumexp(-1)


def unordered_set_weights(log_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights ``w_i = p_i p^{D minus i}(S minus i) / p(S)`` (summing to 1) and leave-one-out
    weights ``v_ij = p_j p^{D minus i,j}(S minus i,j) / p^{D minus i}(S minus i)`` (``v_ii = p_i``)
    of a set S sampled without replacement, from its members' log-probabilities ``[..., k]``.

    ``sum_i w_i g(s_i)`` is unbiased for E_p[g] (Kool et al. 2020, Thm. 1) and
    ``b_i = sum_j v_ij f(s_j)`` is an unbiased estimate of E_p[f] whose expectation given that
    s_i was drawn does not depend on s_i: a valid baseline for sample i. Detached.

    Example:
        >>> w, v = unordered_set_weights(torch.tensor([0.5, 0.3]).log())
        >>> [round(x, 4) for x in w.tolist()], round(float(v[0, 1]), 4)
        ([0.5833, 0.4167], 0.5)
    """
    log_p = log_p.detach()
    k = log_p.shape[-1]
    log_s = set_log_prob(log_p)
    if k == 1:
        return torch.ones_like(log_p), log_p.exp().unsqueeze(-1)
    without, i, j, rest = _subsets(k, log_p.device)
    # log p^{D minus i}(S minus i), every i at once: the set without i, i's mass excluded
    log_loo = set_log_prob(log_p[..., without], log_p)
    w = (log_p + log_loo - log_s.unsqueeze(-1)).exp()
    # v_ij for every ordered pair i != j: the set without i and j, both masses excluded
    removed = torch.logaddexp(log_p[..., i], log_p[..., j])
    if k > 2:
        log_pair = set_log_prob(log_p[..., rest], removed)
    else:
        log_pair = torch.zeros_like(removed)  # nothing left: probability 1
    v = torch.diag_embed(log_p.exp())
    v[..., i, j] = (log_p[..., j] + log_pair - log_loo[..., i]).exp()
    return w, v


def stochastic_beam_search(log_probs: list[torch.Tensor], k: int) -> torch.Tensor:
    """k distinct joint configurations sampled without replacement from a product of
    independent categoricals (Stochastic Beam Search with the Gumbel-top-k trick, Kool, van Hoof
    & Welling 2019, arXiv:1903.06059).

    ``log_probs``: one ``[B, K_g]`` tensor of normalized log-probabilities per group g (B
    independent problems). Returns class indices ``[B, k, G]``; a problem with fewer than k
    configurations raises.

    Example:
        >>> lp = [torch.tensor([[0.5, 0.5]]).log()] * 3
        >>> s = stochastic_beam_search(lp, 4)
        >>> s.shape, len({tuple(c) for c in s[0].tolist()})
        (torch.Size([1, 4, 3]), 4)
    """
    b = log_probs[0].shape[0]
    dtype, device = log_probs[0].dtype, log_probs[0].device
    phi = torch.zeros(b, 1, dtype=dtype, device=device)  # log-probability of each partial code
    g = torch.zeros(b, 1, dtype=dtype, device=device)  # its perturbed log-probability
    codes = torch.zeros(b, 1, 0, dtype=torch.long, device=device)
    for lp in log_probs:
        kg = lp.shape[-1]
        child_phi = phi.unsqueeze(-1) + lp.detach().unsqueeze(1)  # [B, beam, K]
        u = torch.rand(child_phi.shape, dtype=dtype, device=device).clamp(1e-30, 1 - 1e-7)
        g_tilde = child_phi - torch.log(-torch.log(u))
        z = g_tilde.max(-1, keepdim=True).values
        # children's perturbed values conditioned on their maximum being the parent's (stable)
        v = g.unsqueeze(-1) - g_tilde + _log1mexp(g_tilde - z)
        child_g = g.unsqueeze(-1) - v.clamp(min=0) - torch.log1p(torch.exp(-v.abs()))
        child_g = torch.where(
            torch.isfinite(child_phi), child_g, torch.full_like(child_g, -math.inf)
        )
        flat = child_g.reshape(b, -1)
        width = min(k, flat.shape[-1])
        top = flat.topk(width, -1)
        parent, cls = top.indices // kg, top.indices % kg
        codes = torch.cat(
            [
                codes.gather(1, parent.unsqueeze(-1).expand(-1, -1, codes.shape[-1])),
                cls.unsqueeze(-1),
            ],
            -1,
        )
        phi = child_phi.reshape(b, -1).gather(1, top.indices)
        g = top.values
    if codes.shape[1] < k or not torch.isfinite(g).all():
        raise DVAEInputError(
            f"a datum's discrete latents have fewer than {k} configurations; lower num_samples "
            "or sum them exactly (estimator 'enumerate')"
        )
    return codes


def _leaf(fn: Distribution) -> Distribution:
    while isinstance(fn, (Independent, ExpandedDistribution, MaskedDistribution)):
        fn = fn.base_dist
    return fn


class _Layout:
    """How one guide site's values map to per-datum groups of classes."""

    def __init__(self, name: str, fn: Distribution, plates: DataPlates) -> None:
        leaf = _leaf(fn)
        shape = fn.shape()  # batch + event
        if isinstance(leaf, OneHotCategorical):
            self.kind, lp = "one_hot", torch.log_softmax(leaf.logits, -1).expand(shape)
        elif isinstance(leaf, Categorical):
            k = leaf.logits.shape[-1]
            self.kind = "categorical"
            lp = torch.log_softmax(leaf.logits, -1).expand(shape + (k,))
        elif isinstance(leaf, Bernoulli):
            self.kind = "bernoulli"
            logits = leaf.logits.expand(shape)
            lp = torch.stack([F.logsigmoid(-logits), F.logsigmoid(logits)], -1)
        else:
            raise DVAEInputError(
                f"guide site '{name}' ({type(leaf).__name__}) is not Bernoulli, Categorical or "
                "OneHotCategorical; the unordered set estimator samples those: use rloo"
            )
        self.name = name
        self.k = lp.shape[-1]
        self.value_shape = shape
        width = plates.max_plate_nesting
        batch_ndim = len(shape) - fn.event_dim
        # pad the batch dims to the plate width, then data dims first
        pad = width - batch_ndim
        lp = lp.reshape((1,) * pad + tuple(lp.shape))
        data_axes = [width + d for d in plates.dims]
        other = [a for a in range(lp.dim() - 1) if a not in data_axes]
        self.perm = data_axes + other + [lp.dim() - 1]
        self.padded_shape = tuple(lp.shape)
        lp = lp.permute(self.perm)
        self.permuted_shape = tuple(lp.shape[:-1])
        self.log_probs = lp.reshape(plates.num_data, -1, self.k)  # [N, G, K]
        self.groups = self.log_probs.shape[1]

    def value(self, codes: torch.Tensor) -> torch.Tensor:
        """The site's value from class indices ``[N, G]``."""
        idx = codes.reshape(self.permuted_shape)
        inverse = [self.perm.index(a) for a in range(len(self.perm) - 1)]
        idx = idx.permute(inverse).reshape(self.padded_shape[:-1])
        if self.kind == "one_hot":
            value = F.one_hot(idx, self.k).to(self.log_probs.dtype)
        elif self.kind == "bernoulli":
            value = idx.to(self.log_probs.dtype)
        else:
            value = idx
        return value.reshape(self.value_shape)


class _FixedValues(Messenger):
    def __init__(self, values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or isinstance(msg["fn"], _Subsample) or msg["done"]:
            return
        if msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]
            msg["done"] = True


class UnorderedSetELBO(SurrogateLossMixin, ELBO):
    """The unordered set estimator of the ELBO gradient (Kool, van Hoof & Welling 2020,
    "Estimating Gradients for Discrete Random Variables by Sampling without Replacement",
    arXiv:2002.06043), with its built-in baseline.

    Per datum, ``num_samples`` = k *distinct* joint configurations ``s_1..s_k`` of the guide's
    discrete sites are drawn without replacement from q (Stochastic Beam Search over the sites'
    units, arXiv:1903.06059), and the sample ELBO ``f(s_i)`` is evaluated for each. With
    ``p_i = q(s_i)`` and ``w_i = p_i p^{D-i}(S-i) / p(S)`` (the probabilities of the unordered
    set with and without s_i, summed exactly over the k! orders; ``sum_i w_i = 1``)::

        ELBO ~ sum_i w_i f(s_i)
        grad ~ sum_i w_i [ (f(s_i) - b_i) grad log q(s_i) + grad f(s_i) ]

    with the baseline ``b_i = p_i f(s_i) + sum_{j != i} p_j R^{D-i}(S-i, j) f(s_j)``, an
    unbiased estimate of the ELBO from s_i and the other samples whose expectation does not
    depend on s_i. Both are unbiased; the estimate becomes exact where q concentrates on k codes
    (``w_i -> p_i``), unlike sampling with replacement.

    Requirements: the guide's discrete sites (``Bernoulli``, ``Categorical``,
    ``OneHotCategorical``, under any ``.to_event`` / ``.expand`` / ``.mask``) are independent
    given the data (a factorized encoder, checked with Pyro's provenance tracking), there are no
    other guide latents, every guide site lies inside the data plates, and each datum has at
    least k configurations. Cost: two guide runs and one model run per step (the k codes
    are a vectorized plate left of the model's plates, so the model must broadcast over it);
    the k! orders make k above ~6 expensive.

    :param num_samples: k >= 2 codes per datum.
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
        >>> loss = UnorderedSetELBO(4).loss_and_grads(model, guide, torch.full((5,), 2.0))
    """

    def __init__(self, num_samples: int = 4, max_plate_nesting: float = float("inf")) -> None:
        if int(num_samples) < 2:
            raise DVAEInputError(
                f"the unordered set estimator needs num_samples >= 2, got {num_samples}"
            )
        super().__init__(num_particles=1, max_plate_nesting=max_plate_nesting)
        self.num_samples = int(num_samples)
        self._checked: set = set()

    def _check_factorized(self, guide, args, kwargs) -> None:
        require_factorized_guide(guide, args, kwargs, self._checked, "the unordered set estimator")

    def _run(self, model, guide, args, kwargs, values: dict) -> tuple[Trace, Trace]:
        model_trace, guide_trace = get_importance_trace(
            "flat", self.max_plate_nesting, model, _FixedValues(values)(guide), args, kwargs
        )
        if is_validation_enabled():
            check_if_enumerated(guide_trace)
        return model_trace, guide_trace

    def _get_trace(self, model, guide, args, kwargs):
        return self._run(model, guide, args, kwargs, {})

    def _samples(self, model, guide, args, kwargs) -> tuple[dict[str, torch.Tensor], int]:
        """The k value assignments of the guide's discrete sites (distinct per datum), stacked
        along a leading dim of size k, and the model's plate nesting."""
        self._check_factorized(guide, args, kwargs)
        model_trace, guide_trace = self._get_trace(model, guide, args, kwargs)
        plates = local_data_plates(model_trace, guide_trace, lead=0, name="the unordered set")
        layouts = []
        for site in sample_sites(guide_trace):
            if site["is_observed"]:
                continue
            if getattr(site["fn"], "has_rsample", False):
                raise DVAEInputError(
                    f"guide site '{site['name']}' is continuous; the unordered set estimator "
                    "samples discrete guides only: use rloo"
                )
            layouts.append(_Layout(site["name"], site["fn"], plates))
        if not layouts:
            raise DVAEInputError(
                "the guide has no discrete latent site; the unordered set estimator samples "
                "discrete codes: use Trace_ELBO"
            )
        groups = [lo.log_probs[:, g] for lo in layouts for g in range(lo.groups)]
        codes = stochastic_beam_search(groups, self.num_samples)  # [N, k, G]
        values, start = {}, 0
        for lo in layouts:
            part = codes[:, :, start : start + lo.groups]
            values[lo.name] = torch.stack([lo.value(part[:, i]) for i in range(part.shape[1])])
            start += lo.groups
        return values, plates.max_plate_nesting

    def _estimate(self, model, guide, args, kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Surrogate ELBO (gradient = the estimate) and the ELBO estimate, summed over data."""
        values, nesting = self._samples(model, guide, args, kwargs)
        k = self.num_samples

        def vectorized(fn):  # the k codes as a plate left of the model's plates
            def wrapped(*a, **kw):
                with pyro.plate("unordered_set_samples", k, dim=-(nesting + 1)):
                    return fn(*a, **kw)

            return wrapped

        model_trace, guide_trace = get_importance_trace(
            "flat",
            nesting + 1,
            vectorized(model),
            _FixedValues(values)(vectorized(guide)),  # set after the plate broadcasts
            args,
            kwargs,
        )
        plates = local_data_plates(model_trace, guide_trace, lead=1, name="the unordered set")
        f, scores = per_datum_terms(
            model_trace, guide_trace, plates, lead=1, detach_discrete_log_q=True
        )
        f = f.expand(k, plates.num_data).transpose(0, 1)  # [N, k]
        log_q = sum(scores.values(), torch.zeros_like(f.transpose(0, 1))).transpose(0, 1)
        w, v = unordered_set_weights(log_q)
        baseline = (v * f.detach().unsqueeze(-2)).sum(-1)  # [N, k]
        surrogate = (w * (f + (f.detach() - baseline) * (log_q - log_q.detach()))).sum()
        return surrogate, (w * f.detach()).sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A surrogate whose value is ``-ELBO`` (this draw's estimate, summed over data) and
        whose gradient is the unordered set estimate."""
        surrogate, value = self._estimate(model, guide, args, kwargs)
        return -(surrogate + (value - surrogate.detach()))
