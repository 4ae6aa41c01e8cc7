"""Where the training loop is: :class:`LoopState`, saved in every checkpoint.

Example:
    >>> st = LoopState(tau=1.0)
    >>> st.step, sorted(st.history)
    (0, ['loss', 'tau', 'valid_nelbo', 'valid_step'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["LoopState"]


@dataclass
class LoopState:
    """Where the training loop is; everything here goes into the checkpoint.

    :ivar tau: the current temperature of a relaxed estimator.
    :ivar step: finished training steps.
    :ivar epoch: the current epoch (from 1).
    :ivar perm: this epoch's permutation of the training rows, ``None`` between epochs.
    :ivar pos: rows of ``perm`` already used.
    :ivar elapsed: training seconds before this process (a resumed run's earlier time).
    :ivar history: per step ``loss`` and ``tau``, per epoch ``valid_step`` and ``valid_nelbo``.
    :ivar skipped: the updates skipped as non-finite (``on_nan="skip"``).
    """

    tau: float
    step: int = 0
    epoch: int = 0
    perm: torch.Tensor | None = None
    pos: int = 0
    elapsed: float = 0.0
    history: dict[str, list] = field(
        default_factory=lambda: {"loss": [], "tau": [], "valid_step": [], "valid_nelbo": []}
    )
    skipped: list[dict[str, Any]] = field(default_factory=list)
