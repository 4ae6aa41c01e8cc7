"""SIGINT/SIGTERM during training: :class:`TrainingInterrupted` and the signal handlers.

Example:
    >>> with _StopSignals(enabled=False) as stop:
    ...     stop.signum is None
    True
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

from ._state import LoopState

__all__ = ["TrainingInterrupted"]


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM during training: the state was checkpointed, ``str(e)`` says how to go on.

    ``signum`` is the signal, ``step`` the last finished step and ``checkpoint`` the file written
    (``None`` without an output directory).

    Example:
        >>> import signal
        >>> e = TrainingInterrupted("interrupted", signal.SIGINT, step=7, checkpoint=None)
        >>> isinstance(e, KeyboardInterrupt), e.step
        (True, 7)
    """

    def __init__(self, message: str, signum: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


class _StopSignals:
    """Turn SIGINT/SIGTERM into a flag that the loop checks between steps (main thread only).

    A second signal while the first is being handled raises :class:`KeyboardInterrupt` at once
    (the checkpoint on disk is then the previous, complete one).
    """

    _SIGNALS = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM") if hasattr(signal, s))

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> _StopSignals:
        if self.enabled:
            for sig in self._SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _interrupted(
    signum: int, st: LoopState, total_steps: int, ckpt: Path | None
) -> TrainingInterrupted:
    name = signal.Signals(signum).name
    where = f"at step {st.step} of {total_steps} (epoch {st.epoch})"
    if ckpt is None:
        return TrainingInterrupted(f"interrupted ({name}) {where}", signum, st.step, None)
    return TrainingInterrupted(
        f"interrupted ({name}) {where}; saved {ckpt}; continue with: "
        f"pyro-dvae train --resume {ckpt.parent}",
        signum,
        st.step,
        ckpt,
    )
