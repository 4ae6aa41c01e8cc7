"""Where the training loop is (:class:`_LoopState`) and the RNG states saved with it.

Example:
    >>> st = _LoopState(tau=1.0)
    >>> st.step, sorted(st.history)
    (0, ['loss', 'tau', 'valid_nelbo', 'valid_step'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..utils.checkpoint import rng_state, set_rng_state

__all__: list[str] = []


@dataclass
class _LoopState:
    """Where the training loop is; everything here goes into the checkpoint."""

    tau: float
    step: int = 0
    epoch: int = 0
    perm: torch.Tensor | None = None  # this epoch's permutation, None between epochs
    pos: int = 0  # rows of ``perm`` already used
    elapsed: float = 0.0  # training seconds before this process
    history: dict[str, list] = field(
        default_factory=lambda: {"loss": [], "tau": [], "valid_step": [], "valid_nelbo": []}
    )
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _all_rng_states(device: torch.device) -> dict[str, Any]:
    state = rng_state()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_all_rng_states(state: dict[str, Any]) -> None:
    set_rng_state(state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
