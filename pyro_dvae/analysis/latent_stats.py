"""Statistics of the posterior over discrete codes: usage, entropy, and information about labels.

Every function takes the per-observation probabilities of q(z | x): an array ``(n, N, K)`` for
``N`` categorical groups of ``K`` categories, or ``(n, N)`` for ``N`` Bernoulli units (read as
``K = 2`` categories ``0`` / ``1``). All entropies and informations are in nats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DVAEInputError

__all__ = [
    "as_categorical",
    "code_label_joint",
    "code_usage",
    "mutual_information",
    "posterior_entropy",
    "posterior_probs",
    "probs_from_inference_data",
]


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def as_categorical(probs: Any) -> np.ndarray:
    """Probabilities as ``(n, N, K)``: Bernoulli ``(n, N)`` become ``K = 2`` categories.

    Example:
        >>> as_categorical(np.array([[0.25]])).tolist()
        [[[0.75, 0.25]]]
    """
    p = _numpy(probs)
    if p.ndim == 2:
        p = np.stack([1.0 - p, p], axis=-1)
    if p.ndim != 3:
        raise DVAEInputError(
            f"posterior probabilities must have shape (n, groups, categories) or (n, units), "
            f"got {p.shape}"
        )
    return p


def posterior_probs(model: Any, x: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """q(z | x) of a :class:`~pyro_dvae.models.DiscreteVAE` for each row of ``x``:
    ``(n, N, K)`` categorical probabilities or ``(n, N)`` Bernoulli probabilities.

    Example:
        >>> from pyro_dvae.models import DiscreteVAE
        >>> posterior_probs(DiscreteVAE(4, "2x3", encoder_hidden=(8,)), torch.zeros(5, 4)).shape
        (5, 2, 3)
    """
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model.encode_logits(x[i : i + batch_size])
            if model.latent.kind == "categorical":
                out.append(torch.softmax(logits, -1))
            else:
                out.append(torch.sigmoid(logits))
    return torch.cat(out).cpu().numpy().astype(np.float64)


def probs_from_inference_data(idata: Any, site: str = "z") -> np.ndarray:
    """The probabilities of q(z|x) of an export (``constant_data.<site>_probs``, or their mean
    over chains and draws where they vary and sit in ``posterior``).

    Example:
        >>> probs = probs_from_inference_data(idata)  # doctest: +SKIP
    """
    name = f"{site}_probs"
    for group in ("constant_data", "posterior"):
        data = getattr(idata, group, None) if group in _group_names(idata) else None
        if data is not None and name in data.data_vars:
            var = data[name]
            sample = [d for d in ("chain", "draw") if d in var.dims]
            return np.asarray(var.mean(sample).values if sample else var.values, np.float64)
    raise DVAEInputError(
        f"the export has no {name!r} in constant_data or posterior; pass the latent site name "
        "(site=...) of a to_inference_data export"
    )


def _group_names(idata: Any) -> list[str]:
    groups = idata.groups() if callable(idata.groups) else idata.groups
    return [str(g).strip("/") for g in groups]


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.clip(p, 1e-300, None)), 0.0), axis=axis)


def posterior_entropy(probs: Any) -> np.ndarray:
    """Entropy of q(z | x_n) per observation and group, ``(n, N)``, in nats (sum over groups
    for the entropy of the whole code: q factorizes over groups).

    Example:
        >>> posterior_entropy(np.full((1, 2, 4), 0.25)).round(3).tolist()
        [[1.386, 1.386]]
    """
    return _entropy(as_categorical(probs))


def code_usage(probs: Any) -> np.ndarray:
    """The aggregate posterior ``mean_n q(z_g = k | x_n)``, shape ``(N, K)``: how often each
    category of each group is used over the data set.

    Example:
        >>> code_usage(np.array([[[1.0, 0.0]], [[0.0, 1.0]]])).tolist()
        [[0.5, 0.5]]
    """
    return as_categorical(probs).mean(axis=0)


def code_label_joint(probs: Any, labels: Any, num_labels: int | None = None) -> np.ndarray:
    """Joint distribution of (label, category) per group, ``(N, L, K)``, with the soft
    assignment ``p(y, k) = mean_n [y_n = y] q(z_g = k | x_n)``.

    Example:
        >>> code_label_joint(np.array([[[1.0, 0.0]], [[0.0, 1.0]]]), [0, 1])[0].tolist()
        [[0.5, 0.0], [0.0, 0.5]]
    """
    p = as_categorical(probs)
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    y = y.astype(np.int64).reshape(-1)
    if y.shape[0] != p.shape[0]:
        raise DVAEInputError(f"got {y.shape[0]} labels for {p.shape[0]} observations")
    if y.size and y.min() < 0:
        raise DVAEInputError("labels must be integers >= 0")
    num = int(num_labels if num_labels is not None else (y.max() + 1 if y.size else 0))
    onehot = np.eye(num)[y]  # (n, L)
    return np.einsum("nl,ngk->glk", onehot, p) / max(p.shape[0], 1)


def mutual_information(joint: Any) -> float:
    """Mutual information (nats) of a 2-D joint distribution (normalized first).

    Example:
        >>> round(mutual_information(np.eye(2) / 2), 4)  # one bit
        0.6931
    """
    j = _numpy(joint)
    total = j.sum()
    if total <= 0:
        return 0.0
    j = j / total
    outer = j.sum(1, keepdims=True) * j.sum(0, keepdims=True)
    mask = j > 0
    return float(np.sum(j[mask] * (np.log(j[mask]) - np.log(outer[mask]))))
