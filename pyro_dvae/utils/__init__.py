"""Small utilities: atomic checkpoints and device selection."""

from __future__ import annotations

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .device import resolve_device

__all__ = ["load_checkpoint", "resolve_device", "rng_state", "save_checkpoint", "set_rng_state"]
