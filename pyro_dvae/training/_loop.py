"""The training loop, :func:`train`: minibatch SVI with checkpoints, then evaluation.

Example:
    >>> from pyro_dvae.training import TrainConfig, train
    >>> metrics = train(TrainConfig(latent="2x4", epochs=1), progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from tqdm.auto import tqdm

from ..errors import DVAEInputError
from ..infer import RELAXED_ESTIMATORS
from ..latent import LatentSpec
from ..utils.checkpoint import load_checkpoint
from ..utils.device import resolve_device
from ..utils.options import require_positive_int
from ._checkpointing import (
    CHECKPOINT_NAME,
    RUN_OUTPUTS,
    _check_same_data,
    _checkpoint_file,
    _data_info,
    _refuse_existing_run,
    _restore,
    _resume_config,
    _same_dir,
    _save,
    _versions,
    _write_json,
)
from ._config import TrainConfig
from ._guards import _guarded_step
from ._limits import _check_model_size, _too_many
from ._setup import _build, _learning_rate, _load_data
from ._signals import _interrupted, _StopSignals
from ._state import _LoopState
from .evaluation import RunMetrics, _write_plots, evaluate_nelbo, evaluate_run

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
    from ..distributed import init_distributed

    start = time.perf_counter()
    ckpt = None
    if resume is not None:
        resume_file = _checkpoint_file(resume)
        ckpt = load_checkpoint(resume_file)
        config = _resume_config(ckpt, config, resume_file)
        out_dir = resume_file.parent if out_dir is None else out_dir
    config = TrainConfig() if config is None else config
    config.validate()
    if checkpoint_every is not None:
        require_positive_int("checkpoint every", checkpoint_every, "checkpoint_every=100")
    spec = LatentSpec.parse(config.latent)
    # one process unless launched by torchrun
    ctx = init_distributed(config.device) if distributed is None else distributed
    device = resolve_device(config.device)
    if not ctx.is_main:  # rank 0 alone writes checkpoints, metrics and plots
        out_dir, progress = None, False
    out = Path(out_dir) if out_dir is not None else None
    resuming_in_place = ckpt is not None and out is not None and _same_dir(out, resume_file.parent)
    if out is not None and not resuming_in_place and not force:
        _refuse_existing_run(out)

    pyro.set_rng_seed(config.seed)
    pyro.clear_param_store()
    data = _load_data(config, dataset).to(device)
    _check_model_size(config, data.data_dim)
    data_info = _data_info(data)
    if ckpt is not None:
        _check_same_data(ckpt, data_info, resume_file)
    model, elbo, schedule, svi = _build(config, spec, data, device, ctx)
    relaxed = config.estimator in RELAXED_ESTIMATORS

    x_train = data.train
    n = x_train.shape[0]
    generator = torch.Generator().manual_seed(config.seed)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    st = _LoopState(tau=float(config.temperature))
    if ckpt is not None:
        _restore(ckpt, model, elbo, svi, generator, st, resume_file)
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None

    def checkpoint() -> None:
        if ckpt_path is not None:
            _save(
                ckpt_path,
                model=model,
                svi=svi,
                st=st,
                config=config,
                generator=generator,
                schedule=schedule,
                data_info=data_info,
                device=device,
                start=start,
            )

    if out is not None:  # only once the data and model are known to be fine
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DVAEInputError(
                f"cannot create output directory {out} ({e.strerror or e}); choose another --out"
            ) from None
        for pattern in (f".{CHECKPOINT_NAME}.*.tmp", ".metrics.json.tmp"):
            for stale in out.glob(pattern):  # left by a run killed while writing
                stale.unlink(missing_ok=True)
    bar = tqdm(
        total=total_steps,
        initial=st.step,
        disable=not progress,
        desc="train",
        unit="step",
        leave=False,
    )
    # non-finite values are reported by _guarded_step, in one line, instead of Pyro's warnings
    quiet = warnings.catch_warnings()
    with quiet, _StopSignals(enabled=ckpt_path is not None) as stop:
        warnings.filterwarnings(
            "ignore", message="Encountered (NaN|[+-/]*Inf)", category=UserWarning
        )
        try:
            if ckpt is None:
                checkpoint()  # a loadable checkpoint from the very start
                if out is not None:  # a replaced run's results no longer match the checkpoint
                    for name in RUN_OUTPUTS:
                        (out / name).unlink(missing_ok=True)
            model.train()  # dropout and encoder noise on; evaluation switches them off
            while st.step < total_steps or st.perm is not None:
                if st.perm is None:
                    st.epoch += 1
                    st.perm, st.pos = torch.randperm(n, generator=generator), 0
                perm = st.perm.to(x_train.device)
                while st.pos < n and st.step < total_steps:
                    xb = x_train[perm[st.pos : st.pos + config.batch_size]]
                    if relaxed:
                        st.tau = float(schedule(st.step))
                        elbo.temperature = st.tau
                        if config.kl_warmup:
                            elbo.kl_weight = min(1.0, (st.step + 1) / config.kl_warmup)
                    loss = _guarded_step(svi, xb, st, config, ckpt_path) / xb.shape[0]
                    st.pos += xb.shape[0]
                    st.step += 1
                    if config.lr_schedule != "constant" and svi.optimizer is not None:
                        lr = _learning_rate(config, st.step, total_steps)
                        for group in svi.optimizer.param_groups:  # for the next step
                            group["lr"] = lr
                    st.history["loss"].append(loss if math.isfinite(loss) else None)
                    st.history["tau"].append(st.tau)
                    bar.update(1)
                    if callback is not None and callback(st.step, model, elbo):
                        total_steps = st.step  # the callback asked to stop here
                    if st.step % 10 == 0 or st.step == total_steps:
                        bar.set_postfix(loss=f"{loss:.2f}", tau=f"{st.tau:.3f}", epoch=st.epoch)
                    if stop.signum is not None:
                        break
                    if checkpoint_every is not None and st.step % checkpoint_every == 0:
                        checkpoint()
                if stop.signum is not None:
                    checkpoint()
                    raise _interrupted(stop.signum, st, total_steps, ckpt_path)
                valid = evaluate_nelbo(model, data.valid, seed=config.seed + 1)
                st.history["valid_step"].append(st.step)
                st.history["valid_nelbo"].append(valid)
                st.perm, st.pos = None, 0
                checkpoint()
                if stop.signum is not None:
                    raise _interrupted(stop.signum, st, total_steps, ckpt_path)
        finally:
            bar.close()
    if stop.signum is not None:  # arrived after the last check; the epoch's checkpoint is saved
        raise _interrupted(stop.signum, st, total_steps, ckpt_path)
    train_seconds = st.elapsed + (time.perf_counter() - start)

    metrics: RunMetrics = evaluate_run(model, data, config)  # type: ignore[assignment]
    metrics.update(
        dataset=data.name,
        latent=str(spec),
        estimator=config.estimator,
        num_configurations=None if _too_many(spec, 10**300) else spec.num_configurations,
        log2_num_configurations=spec.log2_configurations,
        data_dim=data.data_dim,
        num_train=int(data.train.shape[0]),
        num_valid=int(data.valid.shape[0]),
        num_test=int(data.test.shape[0]),
        valid_nelbo=st.history["valid_nelbo"][-1],
        final_temperature=st.tau if relaxed else None,
        steps=st.step,
        epochs_completed=st.epoch,
        skipped_steps=st.skipped,
        train_seconds=round(train_seconds, 3),
        device=str(device),
        distributed={"world_size": ctx.world_size, "backend": ctx.backend},
        config=config.to_dict(),
        versions=_versions(),
        history=st.history,
    )
    if out is not None:
        plot_history = dict(
            st.history, loss=[math.nan if v is None else v for v in st.history["loss"]]
        )
        _write_plots(model, data, plot_history, out, config.seed + 4)
    metrics["seconds"] = round(st.elapsed + time.perf_counter() - start, 3)
    if out is not None:
        _write_json(out / "metrics.json", metrics)
    return metrics
