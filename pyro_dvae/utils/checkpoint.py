"""Atomic, safe-to-load training checkpoints.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (model
``state_dict``, optimizer state, step, RNG states stored as tensors, and a JSON-able config), so
that it can be read back with ``torch.load(..., weights_only=True)``: a file carrying anything
executable is refused instead of being run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import random
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from ..errors import DVAEInputError

__all__ = [
    "CHECKPOINT_FORMAT",
    "fixed_seed",
    "load_checkpoint",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

#: the ``"format"`` entry of every checkpoint written here
CHECKPOINT_FORMAT = "pyro-dvae-checkpoint/1"


def rng_state() -> dict[str, Any]:
    """The torch, numpy and Python RNG states, as tensors (loadable with ``weights_only``).

    Example:
        >>> state = rng_state()
        >>> sorted(state)
        ['numpy', 'python', 'torch']
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNG states saved by :func:`rng_state`.

    Example:
        >>> state = rng_state()
        >>> a = torch.rand(1)
        >>> set_rng_state(state)
        >>> bool(torch.rand(1) == a)
        True
    """
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            int(np_state["pos"]),
            int(np_state["has_gauss"]),
            float(np_state["cached_gaussian"]),
        )
    )
    py_state = state["python"]
    internal = tuple(int(v) for v in py_state["internal"].tolist())
    random.setstate((int(py_state["version"]), internal, py_state["gauss_next"]))


@contextlib.contextmanager
def fixed_seed(seed: int) -> Iterator[None]:
    """Run a block under a fixed seed without disturbing the surrounding RNG streams.

    Example:
        >>> with fixed_seed(0):
        ...     a = torch.rand(1)
        >>> with fixed_seed(0):
        ...     b = torch.rand(1)
        >>> bool(a == b)
        True
    """
    saved = rng_state()
    pyro.set_rng_seed(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    model_state: Mapping[str, torch.Tensor],
    optimizer_state: Mapping[str, Any] | None = None,
    step: int = 0,
    config: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically and return its path.

    The data is written to a temporary file in the destination directory, flushed and fsynced,
    then moved over ``path`` with :func:`os.replace`; if anything fails the previous file at
    ``path`` (if any) is left untouched.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint(d + "/ck.pt", model_state={"w": torch.ones(2)}, step=3)
        >>> load_checkpoint(p)["step"]
        3
    """
    path = Path(path)
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "model_state": {k: v.detach().cpu() for k, v in model_state.items()},
        "optimizer_state": dict(optimizer_state) if optimizer_state is not None else {},
        "step": int(step),
        "config": dict(config) if config is not None else {},
        "rng_state": dict(rng) if rng is not None else rng_state(),
    }
    if extra:
        payload.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. not supported on this platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device | None = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing executable content.

    Uses ``torch.load(..., weights_only=True)``; a file that would need to run code to be
    unpickled raises :class:`~pyro_dvae.errors.DVAEInputError` instead.

    Example:
        >>> load_checkpoint("/nonexistent/checkpoint.pt")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: checkpoint /nonexistent/checkpoint.pt does not exist; ...
    """
    path = Path(path)
    if not path.is_file():
        raise DVAEInputError(
            f"checkpoint {path} does not exist; pass the checkpoint.pt written by training"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise DVAEInputError(
            f"checkpoint {path} contains executable objects and was refused; only load "
            "checkpoints you trust, written by pyro-dvae (tensors, numbers, strings only)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DVAEInputError(
            f"checkpoint {path} is not a readable torch checkpoint ({msg}); re-run training "
            "to write a new one"
        ) from None
    if not isinstance(data, dict) or "model_state" not in data:
        raise DVAEInputError(
            f"checkpoint {path} is not a pyro-dvae checkpoint (no 'model_state'); pass the "
            "checkpoint.pt written by 'pyro-dvae train'"
        )
    fmt = data.get("format", CHECKPOINT_FORMAT)
    if fmt != CHECKPOINT_FORMAT:
        raise DVAEInputError(
            f"checkpoint {path} has format {fmt!r}, this pyro-dvae reads {CHECKPOINT_FORMAT!r}; "
            "use the pyro-dvae version that wrote it or train again"
        )
    return data
