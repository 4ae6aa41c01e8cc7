"""Small utilities: atomic checkpoints and device selection."""

from __future__ import annotations

from .checkpoint import fixed_seed, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .device import resolve_device

__all__ = [
    "fixed_seed",
    "load_checkpoint",
    "resolve_device",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
