"""Checkpoints, the one module: atomic, safe-to-load files, RNG states, and run directories.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (model
``state_dict``, optimizer state, step, RNG states stored as tensors, and a JSON-able config), so
that it can be read back with ``torch.load(..., weights_only=True)``: a file carrying anything
executable is refused instead of being run.

A training run directory holds ``checkpoint.pt`` (:data:`CHECKPOINT_NAME`, written by
:meth:`pyro_dvae.training.Trainer.save`) and, once finished, :data:`RUN_OUTPUTS`;
:func:`resume_point` reads where such a run would continue, and the checks here refuse to resume
it with other data (:func:`data_fingerprint`) or another configuration.

Example:
    >>> resume_point("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyro_dvae.errors.DVAEInputError: resume=/nonexistent does not exist; ...
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import platform
import random
from collections.abc import Iterator, Mapping
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pyro
import torch

from ..errors import DVAEInputError
from .files import HISTORY_NAME, METRICS_NAME, atomic_write, write_json

if TYPE_CHECKING:
    from ..training import TrainConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "RUN_OUTPUTS",
    "ResumePoint",
    "check_same_data",
    "checkpoint_file",
    "data_fingerprint",
    "fixed_seed",
    "load_checkpoint",
    "refuse_existing_run",
    "resume_config",
    "resume_point",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "versions",
    "write_json",
]

#: the ``"format"`` entry of every checkpoint written here
CHECKPOINT_FORMAT = "pyro-dvae-checkpoint/1"
#: the checkpoint file of a training run directory
CHECKPOINT_NAME = "checkpoint.pt"
#: files of a finished run besides the checkpoint (removed when a forced new run takes over)
RUN_OUTPUTS = (
    METRICS_NAME,
    HISTORY_NAME,
    "training_curve.png",
    "reconstructions.png",
    "prior_samples.png",
)


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """The torch, numpy and Python RNG states, as tensors (loadable with ``weights_only``), and
    the CUDA one of ``device`` when it is a CUDA device.

    Example:
        >>> state = rng_state()
        >>> sorted(state)
        ['numpy', 'python', 'torch']
    """
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state = {
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
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNG states saved by :func:`rng_state` (CUDA's too, where saved and available).

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
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


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
    then moved over ``path`` with :func:`os.replace` (:func:`pyro_dvae.utils.files.atomic_write`);
    if anything fails the previous file at ``path`` (if any) is left untouched, and an
    :class:`OSError` is raised as :class:`~pyro_dvae.errors.DVAEWriteError`.

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
    buf = io.BytesIO()  # serialized first: a full disk is an OSError of the write, in one line
    torch.save(payload, buf)
    return atomic_write(path, lambda f: f.write(buf.getbuffer()), what="checkpoint")


def _first_clause(error: BaseException) -> str:
    """The gist of a loader's error: its first sentence, at most 80 characters (torch's zip
    reader explains itself in 400)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= 80 else first[:77] + "..."


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
        raise DVAEInputError(
            f"checkpoint {path} is damaged or incomplete ({_first_clause(e)}); it was cut off or "
            "changed after it was written: train again, or resume from a good copy of the run"
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


def versions() -> dict[str, str]:
    """The versions of pyro-dvae, torch, pyro, numpy and Python (stored with every run).

    Example:
        >>> sorted(versions())
        ['numpy', 'pyro', 'pyro_dvae', 'python', 'torch']
    """
    from importlib import metadata

    try:
        own = metadata.version("pyro-dvae")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {
        "pyro_dvae": own,
        "torch": str(torch.__version__),
        "pyro": str(pyro.__version__),
        "numpy": str(np.__version__),
        "python": platform.python_version(),
    }


def checkpoint_file(resume: str | Path) -> Path:
    """The checkpoint of a run directory, or ``resume`` itself when it is a file."""
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
        if not path.is_file():
            raise DVAEInputError(
                f"resume={resume}: no {CHECKPOINT_NAME} in that directory; pass the --out "
                "directory of a 'pyro-dvae train' run"
            )
    elif not path.exists():
        raise DVAEInputError(
            f"resume={resume} does not exist; pass the --out directory of a 'pyro-dvae train' run"
        )
    return path


def resume_config(ckpt: dict, config: TrainConfig | None, path: Path) -> TrainConfig:
    """The configuration stored in ``ckpt``; a given ``config`` must equal it (but ``data_dir``)."""
    from ..training import TrainConfig

    raw = ckpt.get("config")
    if not isinstance(raw, dict) or not raw:
        raise DVAEInputError(
            f"checkpoint {path} holds no training configuration; it cannot be resumed, start "
            "a new run"
        )
    try:
        stored = TrainConfig.from_dict(raw)
    except TypeError as e:
        raise DVAEInputError(f"checkpoint {path} has a malformed configuration ({e})") from None
    if config is None:
        return stored
    diff = [
        f"{f.name}={getattr(config, f.name)!r} (run: {getattr(stored, f.name)!r})"
        for f in fields(TrainConfig)
        if f.name != "data_dir" and getattr(config, f.name) != getattr(stored, f.name)
    ]
    if diff:
        raise DVAEInputError(
            f"cannot resume {path} with a different configuration: {'; '.join(diff)}; resume "
            "with the run's own settings or start a new run in another output directory"
        )
    return config


class ResumePoint(NamedTuple):
    """Where ``train(resume=...)`` would continue a run: its stored configuration, checkpoint
    file and last step (for a trained model to analyse, see
    :func:`pyro_dvae.analysis.load_run`)."""

    config: TrainConfig
    checkpoint: Path
    step: int


def resume_point(run: str | Path) -> ResumePoint:
    """The stored configuration, checkpoint file and step of a run directory (or checkpoint).

    Example:
        >>> resume_point("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: resume=/nonexistent does not exist; ...
    """
    path = checkpoint_file(run)
    ckpt = load_checkpoint(path)
    return ResumePoint(resume_config(ckpt, None, path), path, int(ckpt.get("step", 0)))


def refuse_existing_run(out: Path) -> None:
    """Refuse an output directory that already holds a run (or is a file)."""
    if out.exists() and not out.is_dir():
        raise DVAEInputError(f"output {out} is a file, not a directory; pass a directory path")
    found = [name for name in (CHECKPOINT_NAME, METRICS_NAME) if (out / name).exists()]
    if found:
        raise DVAEInputError(
            f"output directory {out} already holds a run ({', '.join(found)}); continue it with "
            f"resume='{out}', pass force=True to replace it, or choose another output directory"
        )


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Name, features, training rows and SHA-256 of a dataset's three splits (stored with a run
    so that it is never resumed on other data).

    Example:
        >>> from pyro_dvae.data import load_digits
        >>> data_fingerprint(load_digits())["data_dim"]
        64
    """
    digest = hashlib.sha256()
    for split in ("train", "valid", "test"):
        x = getattr(data, split)
        digest.update(str(tuple(x.shape)).encode())
        digest.update(x.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return {
        "name": data.name,
        "data_dim": int(data.data_dim),
        "num_train": int(data.train.shape[0]),
        "sha256": digest.hexdigest(),
    }


def check_same_data(ckpt: dict, info: dict[str, Any], path: Path) -> None:
    """Refuse to resume ``ckpt`` on data other than those it was trained on (``info``: their
    :func:`data_fingerprint`)."""
    saved = ckpt.get("data")
    if not isinstance(saved, dict):
        raise DVAEInputError(
            f"checkpoint {path} does not record its training data; it cannot be resumed"
        )
    if saved.get("data_dim") != info["data_dim"]:
        raise DVAEInputError(
            f"the model in {path} was trained on data with {saved.get('data_dim')} features per "
            f"datum, these data have {info['data_dim']}; resume with the dataset the run was "
            "trained on"
        )
    if saved.get("sha256") != info["sha256"]:
        raise DVAEInputError(
            f"the data differ from those the run in {path} was trained on "
            f"({saved.get('name')}, {saved.get('num_train')} training rows; now {info['name']}, "
            f"{info['num_train']}); resume with the same dataset or start a new run"
        )
