"""Checks shared by the sub-commands (``--out``, ``--nproc``), and the translation of library
errors into command-line terms.

Options themselves are declared once, on the configuration dataclasses
(:mod:`pyro_dvae.utils.options`).

Example:
    >>> check_out_dir(Path("/nonexistent/run"), force=False)
    PosixPath('/nonexistent/run')
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DVAEInputError
from ..utils.files import LOCK_NAME
from ..utils.options import to_flags

__all__ = [
    "check_nproc",
    "check_out_dir",
    "check_writable_dir",
    "check_writable_file",
    "in_flag_terms",
]

#: keyword arguments of :func:`~pyro_dvae.training.train` that are flags of ``pyro-dvae train``
_TRAIN_KWARGS = {
    "out_dir": "--out",
    "resume": "--resume",
    "force": "--force",
    "checkpoint_every": "--checkpoint-every",
}


def in_flag_terms(message: str) -> str:
    """A library error message with its options (``lr=1e-3``) written as flags (``--lr 1e-3``).

    Example:
        >>> in_flag_terms("learning rate must be > 0, got 0.0; pass e.g. lr=1e-3")
        'learning rate must be > 0, got 0.0; pass e.g. --lr 1e-3'
    """
    from ..comparison import CompareConfig
    from ..training import SemiSupervisedConfig, TrainConfig

    configs = (TrainConfig, CompareConfig, SemiSupervisedConfig)
    return to_flags(message, *configs, extra=_TRAIN_KWARGS)


def check_out_dir(path: Path, force: bool) -> Path:
    """Refuse an output path that is a file, or a non-empty directory without ``--force``.
    A directory holding nothing but a run lock file (left by a run that failed in a directory
    that existed before it) counts as empty; a live run's lock is refused before this, by
    :func:`~pyro_dvae.utils.files.check_not_locked`.

    Example:
        >>> check_out_dir(Path("/nonexistent/run"), force=False)
        PosixPath('/nonexistent/run')
    """
    if path.exists() and not path.is_dir():
        raise DVAEInputError(f"--out {path} is a file, not a directory; pass a directory path")
    if path.is_dir() and any(p.name != LOCK_NAME for p in path.iterdir()) and not force:
        raise DVAEInputError(
            f"output directory {path} is not empty; pass --force to overwrite it or choose "
            "another --out"
        )
    return path


def check_nproc(nproc: int) -> None:
    """Refuse ``--nproc`` below 1."""
    if nproc < 1:
        raise DVAEInputError(f"--nproc must be >= 1, got {nproc}; pass e.g. --nproc 2")


def check_writable_dir(path: Path, what: str = "--out") -> Path:
    """Create ``path`` (and its parents) if needed and check that a file can be written in it,
    before any work is done; a one-line error otherwise.

    Example:
        >>> check_writable_dir(Path("/proc/pyro-dvae-test"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: cannot write into --out /proc/pyro-dvae-test (...); ...
    """
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".pyro-dvae-probe-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise DVAEInputError(
            f"cannot write into {what} {path} ({reason}); choose a directory you can write to"
        ) from None
    return path


def check_writable_file(path: Path, what: str = "--out") -> Path:
    """Check that the file ``path`` can be written (its directory exists and takes a new file),
    before any work is done; a one-line error otherwise.

    Example:
        >>> check_writable_file(Path("/proc/x.nc"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: cannot write --out /proc/x.nc (...); ...
    """
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.probe-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise DVAEInputError(
            f"cannot write {what} {path} ({reason} in {path.parent}); choose a location you "
            "can write to"
        ) from None
    return path
