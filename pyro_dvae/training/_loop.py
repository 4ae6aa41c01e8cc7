"""Training a run from its configuration, :func:`train`: a thin wrapper around
:class:`~pyro_dvae.training.Trainer` that adds the run directory (resuming, checkpoints, plots,
``metrics.json``).

Example:
    >>> from pyro_dvae.training import TrainConfig, train
    >>> metrics = train(TrainConfig(latent="2x4", epochs=1), progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DVAEInputError
from ..utils.checkpoint import (
    CHECKPOINT_NAME,
    RUN_OUTPUTS,
    check_same_data,
    checkpoint_file,
    load_checkpoint,
    refuse_existing_run,
    resume_config,
    write_json,
)
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

    With ``out_dir``, writes ``metrics.json``, PNG plots and ``checkpoint.pt``: atomically at the
    start, after every epoch, every ``checkpoint_every`` steps (if given) and on SIGINT/SIGTERM
    (then :class:`TrainingInterrupted` is raised). The checkpoint holds the model, the param
    store, the optimizer, the step and the position in the epoch's permutation, every RNG state
    (torch, numpy, Python, data shuffling), the temperature, the history and the config.
    ``resume=RUN_DIR`` (or its ``checkpoint.pt``) continues such a run and ends with the same
    metrics as an uninterrupted one (bitwise on CPU); ``config`` then defaults to the stored one.
    An ``out_dir`` holding another run is refused unless ``force=True``; its checkpoint is only
    replaced by the new run's first one, once data and model are known to be fine.

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
    from ..data import load_dataset
    from ..distributed import init_distributed

    start = time.perf_counter()
    ckpt, resume_file = None, None
    if resume is not None:
        ckpt, resume_file, config = _load_resume(resume, config)
        out_dir = resume_file.parent if out_dir is None else out_dir
    config = TrainConfig() if config is None else config
    config.validate()
    if checkpoint_every is not None:
        require_positive_int("checkpoint every", checkpoint_every, "checkpoint_every=100")
    # one process unless launched by torchrun
    ctx = init_distributed(config.device) if distributed is None else distributed
    if not ctx.is_main:  # rank 0 alone writes checkpoints, metrics and plots
        out_dir, progress = None, False
    out = Path(out_dir) if out_dir is not None else None
    if out is not None and not force and not _same_dir(out, resume_file):
        refuse_existing_run(out)

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
    if out is not None:
        write_json(out / "metrics.json", metrics)
    return metrics


def _load_resume(resume: str | Path, config: TrainConfig | None) -> tuple[dict, Path, TrainConfig]:
    """The checkpoint to resume, its file, and the run's configuration (``config``, if given,
    must equal it)."""
    path = checkpoint_file(resume)
    ckpt = load_checkpoint(path)
    return ckpt, path, resume_config(ckpt, config, path)


def _same_dir(out: Path, resume_file: Path | None) -> bool:
    """Whether ``out`` is the directory of the run being resumed (continued in place)."""
    return resume_file is not None and out.resolve() == resume_file.parent.resolve()


def _prepare_out_dir(out: Path, fresh: Trainer | None) -> None:
    """Create ``out`` and drop what a killed run left there; for a ``fresh`` (not resumed) run,
    write its first checkpoint, then remove a replaced run's results."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DVAEInputError(
            f"cannot create output directory {out} ({e.strerror or e}); choose another out_dir"
        ) from None
    for pattern in (f".{CHECKPOINT_NAME}.*.tmp", ".metrics.json.tmp"):
        for stale in out.glob(pattern):  # left by a run killed while writing
            stale.unlink(missing_ok=True)
    if fresh is not None:
        fresh.save(out / CHECKPOINT_NAME)  # a loadable checkpoint from the very start
        for name in RUN_OUTPUTS:  # a replaced run's results no longer match the checkpoint
            (out / name).unlink(missing_ok=True)
