"""Training a run from its configuration, :func:`train`: a thin wrapper around
:class:`~pyro_dvae.training.Trainer` that adds the run directory (resuming, checkpoints, plots,
``metrics.json``).

Example:
    >>> from pyro_dvae.training import TrainConfig, train
    >>> metrics = train(TrainConfig(latent="2x4", epochs=1), progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import DVAEInputError, DVAEWriteError
from ..utils.checkpoint import (
    CHECKPOINT_NAME,
    RUN_OUTPUTS,
    check_same_data,
    checkpoint_file,
    load_checkpoint,
    refuse_existing_run,
    resume_config,
)
from ..utils.files import HISTORY_NAME, METRICS_NAME, run_lock, write_history, write_json
from ..utils.options import require_positive_int
from ._config import TrainConfig
from ._limits import _check_model_size
from .evaluation import RunMetrics, _write_plots
from .trainer import Trainer

__all__ = ["train"]


def train(
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    dataset: Any | None = None,
    callback: Callable[[int, Any, Any], bool | None] | None = None,
    *,
    resume: str | Path | None = None,
    checkpoint_every: int | None = None,
    force: bool = False,
    distributed: Any | None = None,
) -> RunMetrics:
    """Train a discrete VAE as described by ``config`` and return its metrics (nats/datum).

    ``dataset`` optionally replaces the named dataset with your own
    :class:`~pyro_dvae.data.BinaryDataset`. ``callback(step, model, elbo)``, if given, runs after
    every training step (``step`` counts from 1); a truthy return ends training there (used by
    :mod:`pyro_dvae.comparison` for learning curves and wall-clock budgets). The same config and
    seed give the same numbers.

    With ``out_dir``, writes ``metrics.json`` (the summary), ``history.jsonl`` (the loss and
    temperature of every step, the validation -ELBO of every epoch), PNG plots and
    ``checkpoint.pt``; every file atomically, the checkpoint at the
    start, after every epoch, every ``checkpoint_every`` steps (if given) and on SIGINT/SIGTERM
    (then :class:`TrainingInterrupted` is raised). The checkpoint holds the model, the param
    store, the optimizer, the step and the position in the epoch's permutation, every RNG state
    (torch, numpy, Python, data shuffling), the temperature, the history and the config.
    ``resume=RUN_DIR`` (or its ``checkpoint.pt``) continues such a run and ends with the same
    metrics as an uninterrupted one (bitwise on CPU); ``config`` then defaults to the stored one.
    A ``config`` that differs from it only in ``epochs`` or ``max_steps`` extends a finished run
    (or shortens an unfinished one): the temperature schedule, KL warm-up, a constant learning
    rate, the data order and the RNGs depend on the step alone, so the result equals an
    uninterrupted run of the new length (but where ``max_steps`` had cut the last epoch short:
    the extension starts a new epoch); under ``lr_schedule='cosine'``, whose rates depend on the
    length, a new length is refused.
    An ``out_dir`` holding another run is refused unless ``force=True``; its checkpoint is only
    replaced by the new run's first one, once data and model are known to be fine. The
    directory is locked while this call runs (:func:`~pyro_dvae.utils.files.run_lock`): another
    process training, resuming or forcing into it is refused in one line naming the holder.
    A file that cannot be written (no space, read-only, quota) raises
    :class:`~pyro_dvae.errors.DVAEWriteError` naming it and the checkpoint that is kept.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) training is data-parallel
    (:mod:`pyro_dvae.distributed`): every rank takes its slice of each global batch, DDP
    averages the gradients, rank 0 alone writes files. Pass
    ``distributed=DistributedContext()`` to train in this process alone regardless (as
    :func:`~pyro_dvae.comparison.run_comparison` does for its independent runs).

    Raises :class:`~pyro_dvae.errors.DVAEInputError` for bad input and
    :class:`~pyro_dvae.errors.NonFiniteLossError` when a loss or gradient becomes NaN or
    infinite (``config.on_nan="skip"`` skips up to ``max_nan_skips`` such updates instead).

    Example:
        >>> cfg = TrainConfig(latent="2x4", epochs=1, iwae_samples=10, encoder_hidden=(32,))
        >>> metrics = train(cfg, progress=False)  # doctest: +SKIP
        >>> metrics["test_nll_exact"] <= metrics["test_nelbo"]  # doctest: +SKIP
        True
    """
    start = time.perf_counter()
    resume_file = checkpoint_file(resume) if resume is not None else None
    if resume_file is not None and out_dir is None:
        out_dir = resume_file.parent
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and out.exists() and not out.is_dir():
        raise DVAEInputError(f"output {out} is a file, not a directory; pass a directory path")
    main = int(os.environ.get("RANK", "0")) == 0 if distributed is None else distributed.is_main
    if not main:
        out = None  # rank 0 alone writes (and locks) the run directory
    # the run directory belongs to this process until it returns; a live run is never replaced
    lock = run_lock(out, create=True) if out is not None else contextlib.nullcontext()
    with lock:
        ckpt = None
        if resume_file is not None:
            ckpt, resume_file, config = _load_resume(resume_file, config)
        if out is not None and not force and not _same_dir(out, resume_file):
            refuse_existing_run(out)
        saved = _Saved(out, fresh=ckpt is None)
        try:
            return _train(
                config,
                out,
                progress,
                dataset,
                callback,
                ckpt,
                resume_file,
                checkpoint_every,
                distributed,
                start,
                saved,
            )
        except DVAEWriteError as e:
            raise saved.error(e) from None


def _train(
    config: TrainConfig | None,
    out: Path | None,
    progress: bool,
    dataset: Any | None,
    callback: Any,
    ckpt: dict | None,
    resume_file: Path | None,
    checkpoint_every: int | None,
    distributed: Any | None,
    start: float,
    saved: _Saved,
) -> RunMetrics:
    from ..data import load_dataset
    from ..distributed import init_distributed

    config = TrainConfig() if config is None else config
    config.validate()
    if checkpoint_every is not None:
        require_positive_int("checkpoint every", checkpoint_every, "checkpoint_every=100")
    # one process unless launched by torchrun
    ctx = init_distributed(config.device) if distributed is None else distributed
    if not ctx.is_main:  # rank 0 alone writes checkpoints, metrics and plots
        out, progress = None, False

    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    _check_model_size(config, data.data_dim)
    trainer = Trainer(config, data, distributed=ctx)
    trainer.clock_start = start
    if ckpt is not None:
        check_same_data(ckpt, trainer.data_info, resume_file)
        trainer.restore(ckpt, resume_file)
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    if out is not None:  # only once the data and model are known to be fine
        _prepare_out_dir(out, fresh=trainer if ckpt is None else None)
        saved.own = True  # the checkpoint there is this run's from now on
    trainer.fit(
        checkpoint=ckpt_path,
        checkpoint_every=checkpoint_every,
        progress=progress,
        callback=callback,
    )
    metrics = trainer.metrics()
    if out is not None:
        history = trainer.state.history
        plot_history = dict(history, loss=[math.nan if v is None else v for v in history["loss"]])
        _write_plots(trainer.model, trainer.data, plot_history, out, config.seed + 4)
    metrics["seconds"] = round(trainer.train_seconds, 3)
    if out is not None:  # the history in a file of its own, then the summary (the run is done)
        write_history(out / HISTORY_NAME, metrics["history"])
        summary = {k: v for k, v in metrics.items() if k != "history"}
        write_json(out / METRICS_NAME, {**summary, "history_file": HISTORY_NAME}, what="metrics")
    return metrics


class _Saved:
    """What a failed write of a run keeps: the checkpoint on disk, once it is this run's."""

    def __init__(self, out: Path | None, fresh: bool) -> None:
        self.out, self.own = out, not fresh

    def error(self, e: DVAEWriteError) -> DVAEWriteError:
        """``e`` in one line, with the checkpoint that is kept and how to continue."""
        out = self.out
        head = f"could not write {e.what} {e.path} ({e.reason})"
        file = None if out is None else out / CHECKPOINT_NAME
        step = None
        if file is not None and file.is_file():
            try:
                step = int(load_checkpoint(file).get("step", 0))
            except DVAEInputError:
                step = None
        if step is None:
            kept = "no checkpoint of this run was written"
        elif not self.own:
            kept = f"the previous run's checkpoint {file} (step {step}) is kept"
        else:
            kept = (
                f"the last good checkpoint (step {step}) is kept in {file}; free space or fix "
                f"permissions, then continue with resume='{out}'"
            )
        return DVAEWriteError(f"{head}; {kept}", path=e.path, reason=e.reason, what=e.what)


def _load_resume(path: Path, config: TrainConfig | None) -> tuple[dict, Path, TrainConfig]:
    """The checkpoint ``path`` to resume, and the run's configuration (``config``, if given,
    must equal it but in ``data_dir`` and the run's length, ``epochs`` and ``max_steps``:
    :meth:`~pyro_dvae.training.Trainer.restore` checks the new length)."""
    ckpt = load_checkpoint(path)
    stored = resume_config(ckpt, None, path)
    if config is None:
        return ckpt, path, stored
    same_length = replace(config, epochs=stored.epochs, max_steps=stored.max_steps)
    resume_config(ckpt, same_length, path)  # every other setting must be the run's
    return ckpt, path, config


def _same_dir(out: Path, resume_file: Path | None) -> bool:
    """Whether ``out`` is the directory of the run being resumed (continued in place)."""
    return resume_file is not None and out.resolve() == resume_file.parent.resolve()


def _prepare_out_dir(out: Path, fresh: Trainer | None) -> None:
    """Create ``out`` and drop what a killed run left there; for a ``fresh`` (not resumed) run,
    write its first checkpoint, then remove a replaced run's results."""
    for pattern in (".*.tmp",):
        for stale in out.glob(pattern):  # left by a run killed while writing
            stale.unlink(missing_ok=True)
    if fresh is not None:
        fresh.save(out / CHECKPOINT_NAME)  # a loadable checkpoint from the very start
        for name in RUN_OUTPUTS:  # a replaced run's results no longer match the checkpoint
            (out / name).unlink(missing_ok=True)
