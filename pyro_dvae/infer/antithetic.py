"""Antithetic draws of Bernoulli and categorical sites (DisARM, Dong, Mnih & Tucker 2020 and
2021): the sites' logits, the stick-breaking construction of a categorical, and DisARM's
per-unit weights."""

from __future__ import annotations

import torch
from pyro.distributions import Independent
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from torch.distributions import Bernoulli, Categorical, Distribution, OneHotCategorical

__all__ = [
    "antithetic_uniforms",
    "bernoulli_logits",
    "categorical_logits",
    "disarm_weights",
    "draw_from_uniforms",
    "stick_breaking_draw",
    "stick_breaking_logits",
    "stick_breaking_signal",
]


def bernoulli_logits(fn: Distribution) -> torch.Tensor | None:
    """The logits of a Bernoulli site's distribution, broadcast to its value's shape, or
    ``None`` if its innermost distribution is not a ``Bernoulli`` (``.to_event``, ``.expand``
    and ``.mask`` wrappers are looked through).

    Example:
        >>> import pyro.distributions as dist
        >>> bernoulli_logits(dist.Bernoulli(logits=torch.zeros(3)).expand([2, 3]).to_event(1)).shape
        torch.Size([2, 3])
    """
    leaf = fn
    while isinstance(leaf, (Independent, ExpandedDistribution, MaskedDistribution)):
        leaf = leaf.base_dist
    if not isinstance(leaf, Bernoulli) or getattr(fn, "has_rsample", False):
        return None
    return leaf.logits.expand(fn.shape())


def categorical_logits(fn: Distribution) -> tuple[torch.Tensor, bool] | None:
    """The logits of a ``Categorical`` or ``OneHotCategorical`` site's distribution, broadcast
    to ``[*value_shape, K]`` (integer values) or to the one-hot value's shape, and whether the
    values are one-hot; ``None`` for any other site (wrappers are looked through as in
    :func:`bernoulli_logits`; reparameterized one-hot relaxations are not categorical here).

    Example:
        >>> import pyro.distributions as dist
        >>> fn = dist.Categorical(logits=torch.zeros(4)).expand([2])
        >>> logits, one_hot = categorical_logits(fn)
        >>> logits.shape, one_hot
        (torch.Size([2, 4]), False)
    """
    leaf = fn
    while isinstance(leaf, (Independent, ExpandedDistribution, MaskedDistribution)):
        leaf = leaf.base_dist
    if getattr(fn, "has_rsample", False):
        return None
    if isinstance(leaf, OneHotCategorical):
        return leaf.logits.expand(fn.shape()), True
    if isinstance(leaf, Categorical):
        return leaf.logits.expand(fn.shape() + leaf.logits.shape[-1:]), False
    return None


def stick_breaking_logits(logits: torch.Tensor) -> torch.Tensor:
    """The ``K - 1`` binary logits ``a_k = logits_k - logsumexp(logits_{k+1:})`` of the
    stick-breaking construction of ``Categorical(logits)``: with independent ``b_k ~
    Bernoulli(sigmoid(a_k))``, ``z = min{k : b_k = 1}`` (``K - 1`` if none) has probabilities
    ``softmax(logits)`` (Dong, Mnih & Tucker 2021, arXiv:2106.08056, Sec. 4). Differentiable.

    Example:
        >>> a = stick_breaking_logits(torch.tensor([0.0, 0.0, 0.0]))
        >>> a.sigmoid()  # P(z = 0) = 1/3, P(z = 1 | z > 0) = 1/2
        tensor([0.3333, 0.5000])
    """
    tail = torch.logcumsumexp(logits.flip(-1), dim=-1).flip(-1)  # logsumexp(logits[k:])
    return logits[..., :-1] - tail[..., 1:]


def stick_breaking_draw(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The category index of uniforms ``u`` (``[..., K - 1]``) under the stick-breaking
    construction: the first ``k`` with ``u_k < sigmoid(a_k)``, else ``K - 1``."""
    b = u < torch.sigmoid(stick_breaking_logits(logits))
    stop = torch.cat([b, torch.ones_like(b[..., :1])], -1)
    return stop.to(torch.uint8).argmax(-1)  # the first maximum


def stick_breaking_signal(
    z: torch.Tensor, z_anti: torch.Tensor, u: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficients of the categorical DisARM estimate of the antithetic pair ``z`` (uniforms
    ``u``) and ``z~`` (``1 - u``) on the stick-breaking logits ``a`` (``[..., K - 1]``): the
    gradient estimate wrt ``a`` is ``(f(z) - f(z~)) / 2 * c_same + (f(z) - f(z~)) / 2 * c_longer``
    where, with ``m = min(z, z~)``,

    - ``c_same`` (binary units ``k <= m``, which both members read): DisARM's weight
      ``(-1)^{b~_k} 1[b_k != b~_k] sigmoid(|a_k|)`` (nonzero only at ``k = m``);
    - ``c_longer`` (units ``m < k <= max(z, z~)``, read by the longer member only): ``b_k -
      sigmoid(a_k)`` of the member with the larger index, signed ``+1`` if that is ``z`` and
      ``-1`` if it is ``z~`` (a score-function term whose baseline is the other member's
      ``f``, which does not depend on unit ``k``);

    units beyond both draws get 0 (Rao-Blackwellized: neither ``f`` reads them). This is the
    stick-breaking DisARM of Dong, Mnih & Tucker 2021 (arXiv:2106.08056). Both detached; the
    estimate uses their sum.

    Example:
        >>> a = torch.zeros(2)  # three equiprobable classes
        >>> u = torch.tensor([0.6, 0.2])  # b = (0, 1): z = 1; b~ = (1, 0): z~ = 0
        >>> same, longer = stick_breaking_signal(torch.tensor(1), torch.tensor(0), u, a)
        >>> same  # unit 0, read by both: DisARM's weight
        tensor([-0.5000,  0.0000])
        >>> longer  # unit 1, read by z only: b_1 - sigmoid(a_1)
        tensor([0.0000, 0.5000])
    """
    a = a.detach()
    k = torch.arange(a.shape[-1], device=a.device)
    b = (u < torch.sigmoid(a)).to(a.dtype)
    b_anti = (1.0 - u < torch.sigmoid(a)).to(a.dtype)
    lo = torch.minimum(z, z_anti).unsqueeze(-1)
    hi = torch.maximum(z, z_anti).unsqueeze(-1)
    same = torch.where(k <= lo, disarm_weights(b, b_anti, a), torch.zeros_like(a))
    z_longer = (z > z_anti).unsqueeze(-1)
    score = torch.where(z_longer, b - torch.sigmoid(a), -(b_anti - torch.sigmoid(a)))
    longer = torch.where((k > lo) & (k <= hi), score, torch.zeros_like(a))
    return same, longer


def disarm_weights(b: torch.Tensor, b_anti: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """DisARM's per-unit weight ``(-1)^{b~} 1[b != b~] sigmoid(|logits|)`` of the antithetic
    pair ``(b, b~)``; the gradient estimate wrt ``logits`` is ``(f(b) - f(b~)) / 2`` times it
    (Dong, Mnih & Tucker 2020, arXiv:2006.10680). Detached.

    Example:
        >>> disarm_weights(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0]),
        ...                torch.zeros(3))
        tensor([ 0.5000, -0.5000,  0.0000])
    """
    weight = (1.0 - 2.0 * b_anti) * torch.sigmoid(logits.abs())
    return torch.where(b != b_anti, weight, torch.zeros_like(weight)).detach()


def antithetic_uniforms(params: torch.Tensor, bernoulli: bool) -> torch.Tensor:
    """Uniforms ``u`` for a Bernoulli site with logits ``params`` (one per unit) or a
    categorical site with logits ``params`` ``[..., K]`` (``K - 1`` per stick-breaking draw);
    the antithetic member uses ``1 - u``.

    Example:
        >>> antithetic_uniforms(torch.zeros(2, 5), bernoulli=False).shape
        torch.Size([2, 4])
    """
    shape = params.shape if bernoulli else params.shape[:-1] + (params.shape[-1] - 1,)
    return torch.rand(shape, dtype=params.dtype, device=params.device)


def draw_from_uniforms(
    params: torch.Tensor, u: torch.Tensor, one_hot: bool | None = None
) -> torch.Tensor:
    """The value drawn from uniforms ``u``: ``1[u < sigmoid(params)]`` for a Bernoulli site
    (``one_hot=None``), else the stick-breaking category of logits ``params`` (:func:
    `stick_breaking_draw`), one-hot encoded if ``one_hot``. Detached.

    Example:
        >>> draw_from_uniforms(torch.zeros(3), torch.tensor([0.2, 0.7, 0.4]))
        tensor([1., 0., 1.])
        >>> draw_from_uniforms(torch.zeros(3), torch.tensor([0.9, 0.2]), one_hot=True)
        tensor([0., 1., 0.])
    """
    with torch.no_grad():
        if one_hot is None:
            return (u < torch.sigmoid(params)).to(params.dtype)
        index = stick_breaking_draw(params, u)
        if one_hot:
            return torch.nn.functional.one_hot(index, params.shape[-1]).to(params.dtype)
        return index
