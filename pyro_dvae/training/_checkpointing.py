"""Checkpoints of a training run: writing, resuming, restoring, and :func:`resume_point`.

A run directory holds ``checkpoint.pt`` (see :mod:`pyro_dvae.utils.checkpoint`), and once
finished ``metrics.json`` and plots; ``train(resume=RUN_DIR)`` continues it bitwise on CPU.

Example:
    >>> resume_point("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    pyro_dvae.errors.DVAEInputError: --resume /nonexistent does not exist; ...
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyro
import torch

from ..errors import DVAEInputError, NonFiniteLossError
from ..utils.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from ._config import TrainConfig
from ._guards import _non_finite_tensors
from ._state import _all_rng_states, _LoopState, _set_all_rng_states

__all__ = ["CHECKPOINT_NAME", "RUN_OUTPUTS", "ResumePoint", "resume_point"]

CHECKPOINT_NAME = "checkpoint.pt"
#: files of a finished run besides the checkpoint (removed when a forced new run takes over)
RUN_OUTPUTS = ("metrics.json", "training_curve.png", "reconstructions.png", "prior_samples.png")


def _versions() -> dict[str, str]:
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


def _save(
    path: Path,
    *,
    model: Any,
    svi: Any,
    st: _LoopState,
    config: TrainConfig,
    generator: torch.Generator,
    schedule: Any,
    data_info: dict[str, Any],
    device: torch.device,
    start: float,
) -> None:
    """Write the loop's whole state to ``path`` atomically; ``start`` is this process's start
    time (``time.perf_counter()``). A non-finite parameter is refused, keeping the last good
    checkpoint."""
    store = dict(pyro.get_param_store().named_parameters())
    bad = _non_finite_tensors(store)
    if bad:  # never replace a good checkpoint with a broken state
        raise NonFiniteLossError(
            f"{bad} at step {st.step} (epoch {st.epoch}); the last good checkpoint is kept "
            f"in {path}"
        )
    save_checkpoint(
        path,
        model_state=model.state_dict(),
        optimizer_state=svi.state_dict(),
        step=st.step,
        config=config.to_dict(),
        rng=_all_rng_states(device),
        extra={
            "epoch": st.epoch,
            "epoch_position": st.pos,
            "permutation": st.perm,
            "shuffle_rng": generator.get_state(),
            "param_store": {k: v.detach().cpu().clone() for k, v in store.items()},
            "temperature": {"schedule": repr(schedule), "tau": st.tau},
            "history": st.history,
            "skipped_steps": st.skipped,
            "train_seconds": st.elapsed + (time.perf_counter() - start),
            "data": data_info,
            "versions": _versions(),
        },
    )


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    tmp.replace(path)


def _checkpoint_file(resume: str | Path) -> Path:
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
        if not path.is_file():
            raise DVAEInputError(
                f"--resume {resume}: no {CHECKPOINT_NAME} in that directory; pass the --out "
                "directory of a 'pyro-dvae train' run"
            )
    elif not path.exists():
        raise DVAEInputError(
            f"--resume {resume} does not exist; pass the --out directory of a 'pyro-dvae train' run"
        )
    return path


def _resume_config(ckpt: dict, config: TrainConfig | None, path: Path) -> TrainConfig:
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
        pyro_dvae.errors.DVAEInputError: --resume /nonexistent does not exist; ...
    """
    path = _checkpoint_file(run)
    ckpt = load_checkpoint(path)
    return ResumePoint(_resume_config(ckpt, None, path), path, int(ckpt.get("step", 0)))


def _same_dir(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _refuse_existing_run(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise DVAEInputError(f"output {out} is a file, not a directory; pass a directory path")
    found = [name for name in (CHECKPOINT_NAME, "metrics.json") if (out / name).exists()]
    if found:
        raise DVAEInputError(
            f"output directory {out} already holds a run ({', '.join(found)}); continue it with "
            "--resume, pass --force (force=True) to replace it, or choose another --out"
        )


def _data_info(data: Any) -> dict[str, Any]:
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


def _check_same_data(ckpt: dict, info: dict[str, Any], path: Path) -> None:
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


def _restore(
    ckpt: dict,
    model: Any,
    elbo: Any,
    svi: Any,
    generator: torch.Generator,
    st: _LoopState,
    path: Path,
) -> None:
    """Put a fresh model, param store, optimizer, RNGs and loop state where ``ckpt`` left them."""
    try:
        model.load_state_dict(ckpt["model_state"])
        saved = dict(ckpt["param_store"])
        pyro.module(model.name, model)
        net = getattr(elbo, "baseline_net", None)
        prefix = f"{getattr(elbo, 'baseline_name', '')}$$$"
        if net is not None and any(k.startswith(prefix) for k in saved):  # else: not used yet
            net.load_state_dict(
                {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}
            )
            pyro.module(elbo.baseline_name, net)
        store = pyro.get_param_store()
        device = next(model.parameters()).device
        for name, value in saved.items():
            if name not in store:
                pyro.param(name, value.to(device).clone())
        svi.load_state_dict(ckpt["optimizer_state"])
        generator.set_state(ckpt["shuffle_rng"])
        _set_all_rng_states(ckpt["rng_state"])
        st.step, st.epoch = int(ckpt["step"]), int(ckpt["epoch"])
        st.perm, st.pos = ckpt["permutation"], int(ckpt["epoch_position"])
        st.tau = float(ckpt["temperature"]["tau"])
        st.history = {k: list(v) for k, v in ckpt["history"].items()}
        st.skipped = list(ckpt["skipped_steps"])
        st.elapsed = float(ckpt["train_seconds"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:300]
        raise DVAEInputError(
            f"checkpoint {path} cannot be resumed ({type(e).__name__}: {msg}); it was not "
            f"written by this version of 'pyro-dvae train' ({CHECKPOINT_FORMAT})"
        ) from None
