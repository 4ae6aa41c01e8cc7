"""Shared helpers of the plotting modules (non-interactive ``Agg`` backend, PNG saving)."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = ["Figure", "plt", "save", "smooth", "to_numpy", "unit_limits"]


def to_numpy(x: Any) -> np.ndarray:
    """A float64 numpy array from a tensor, list or array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def unit_limits(*arrays: np.ndarray) -> dict[str, float | None]:
    """Fix the colour scale to [0, 1] for probabilities, else let matplotlib choose."""
    inside = all(a.size == 0 or (a.min() >= 0.0 and a.max() <= 1.0) for a in arrays)
    return {"vmin": 0.0, "vmax": 1.0} if inside else {"vmin": None, "vmax": None}


def save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    """Save ``fig`` as a PNG at ``path`` (if given, atomically) and return it."""
    if path is not None:
        from ..utils.files import save_figure

        save_figure(fig, path, dpi=100, bbox_inches="tight")
    return fig


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` points (``valid`` part only)."""
    if window <= 1 or values.size < window:
        return values
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def clip_ylim(ax: Any, *series: np.ndarray, low: float = 0, high: float = 98) -> None:
    """Limit the y axis to a percentile range of ``series`` so early outliers don't squash it."""
    finite = [s[np.isfinite(s)] for s in series if s.size]
    values = np.concatenate(finite) if finite else np.array([])
    if values.size > 4:
        lo, hi = np.percentile(values, [low, high])
        pad = 0.05 * (hi - lo + 1e-9)
        ax.set_ylim(lo - pad, hi + pad)
