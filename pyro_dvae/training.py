"""Training loop: :class:`TrainConfig` and :func:`train`.

:func:`train` fits a :class:`~pyro_dvae.models.DiscreteVAE` with Pyro's ``SVI`` on minibatches,
anneals the relaxation temperature, and evaluates the held-out test set in nats per datum:
the discrete ELBO, an importance-weighted (IWAE) estimate of ``log p(x)`` and, when the latent
space is small enough, the exact ``log p(x)`` by enumeration.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import platform
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from tqdm.auto import tqdm

from .errors import DVAEInputError, LatentSpaceTooLargeError, NonFiniteLossError
from .infer import ESTIMATORS, EXACT_ESTIMATORS, RELAXED_ESTIMATORS
from .latent import LatentSpec
from .utils.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .utils.device import resolve_device

__all__ = [
    "CHECKPOINT_NAME",
    "DATASETS",
    "ESTIMATORS",
    "ON_NAN",
    "RELAXED_ESTIMATORS",
    "TrainConfig",
    "TrainingInterrupted",
    "load_run",
    "train",
]

DATASETS = ("digits", "mnist", "synthetic")
#: what to do when a step's loss or gradient is NaN/inf: stop, or skip the update (bounded)
ON_NAN = ("stop", "skip")
CHECKPOINT_NAME = "checkpoint.pt"
#: files of a finished run besides the checkpoint (removed when a forced new run takes over)
RUN_OUTPUTS = ("metrics.json", "training_curve.png", "reconstructions.png", "prior_samples.png")
#: most latent units (N*K one-hot, or N Bernoulli) a model may have
MAX_LATENT_UNITS = 2**20
#: most encoder + decoder parameters (2**28 float32 = 1 GiB, ~4 GiB with gradients and Adam)
MAX_PARAMETERS = 2**28
_DATA_DIMS = {"digits": 64, "synthetic": 16, "mnist": 784}  # features of the named datasets
_MAX_SEED = 2**32 - 1  # numpy's seed range
_EVAL_BATCH = 100
_log = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM during training: the state was checkpointed, ``str(e)`` says how to go on.

    ``signum`` is the signal, ``step`` the last finished step and ``checkpoint`` the file written
    (``None`` without an output directory).
    """

    def __init__(self, message: str, signum: int, step: int, checkpoint: Path | None) -> None:
        super().__init__(message)
        self.signum, self.step, self.checkpoint = signum, step, checkpoint


@dataclass
class TrainConfig:
    """Everything that defines a training run (all JSON-able, stored in ``metrics.json``).

    The defaults train a ``4x8`` categorical VAE on the embedded digits with the Gumbel-softmax
    estimator in about a minute on two CPU cores.

    Example:
        >>> cfg = TrainConfig(latent="2x4", epochs=1)
        >>> cfg.validate()
        >>> TrainConfig(lr=0.0).validate()
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: learning rate must be > 0, got 0.0; pass e.g. --lr 1e-3
    """

    dataset: str = "digits"
    data_dir: str | None = None
    latent: str = "4x8"
    estimator: str = "gumbel-softmax"
    kl: str = "analytic"
    temperature: float = 1.0
    schedule: str = "constant"
    anneal_rate: float = 3e-5
    anneal_every: int = 1000
    tau_min: float = 0.5
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    device: str = "cpu"
    encoder_hidden: tuple[int, ...] = (256, 128)
    decoder_hidden: tuple[int, ...] | None = None
    prior: str = "uniform"
    likelihood: str = "bernoulli"
    num_particles: int = 1
    gumbel_rao_samples: int = 10
    iwae_samples: int = 1000
    max_configurations: int = 2**20
    on_nan: str = "stop"
    max_nan_skips: int = 10

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`to_dict` (lists become tuples); unknown keys are refused.

        Example:
            >>> TrainConfig.from_dict(TrainConfig(latent="2x4").to_dict()).latent
            '2x4'
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DVAEInputError(
                f"unknown configuration key(s) {', '.join(unknown)}; the run was written by a "
                "different pyro-dvae version, train it again with this one"
            )
        kwargs = dict(values)
        for key in ("encoder_hidden", "decoder_hidden"):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def validate(self) -> None:
        """Raise :class:`~pyro_dvae.errors.DVAEInputError` naming the first bad value."""
        if self.dataset not in DATASETS:
            raise DVAEInputError(
                f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}"
            )
        spec = LatentSpec.parse(self.latent)
        if self.estimator not in ESTIMATORS:
            raise DVAEInputError(
                f"unknown estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}"
            )
        if self.kl not in ("relaxed", "analytic"):
            raise DVAEInputError(f"unknown kl {self.kl!r}; choose 'relaxed' or 'analytic'")
        _positive("temperature", self.temperature, "--temperature 1.0")
        _positive("tau-min", self.tau_min, "--tau-min 0.5")
        _positive("learning rate", self.lr, "--lr 1e-3")
        if self.schedule not in ("constant", "exponential"):
            raise DVAEInputError(
                f"unknown schedule {self.schedule!r}; choose 'constant' or 'exponential'"
            )
        if not (math.isfinite(self.anneal_rate) and self.anneal_rate >= 0):
            raise DVAEInputError(
                f"anneal rate must be >= 0, got {self.anneal_rate}; pass e.g. --anneal-rate 3e-5"
            )
        for name, value, flag in (
            ("epochs", self.epochs, "--epochs 10"),
            ("batch size", self.batch_size, "--batch-size 100"),
            ("anneal-every", self.anneal_every, "--anneal-every 1000"),
            ("iwae samples", self.iwae_samples, "--iwae-samples 1000"),
            ("num particles", self.num_particles, "--particles 1"),
            ("gumbel-rao samples", self.gumbel_rao_samples, "--gumbel-rao-samples 10"),
            ("max configurations", self.max_configurations, "max_configurations=2**20"),
        ):
            _positive_int(name, value, flag)
        if self.max_steps is not None:
            _positive_int("max steps", self.max_steps, "--max-steps 100")
        if not isinstance(self.seed, int) or not 0 <= self.seed <= _MAX_SEED:
            raise DVAEInputError(
                f"seed must be an integer in [0, {_MAX_SEED}], got {self.seed!r}; "
                "pass e.g. --seed 0"
            )
        if self.on_nan not in ON_NAN:
            raise DVAEInputError(f"unknown on-nan {self.on_nan!r}; choose 'stop' or 'skip'")
        _positive_int("max nan skips", self.max_nan_skips, "--max-nan-skips 10")
        for name, hidden in (("encoder", self.encoder_hidden), ("decoder", self.decoder_hidden)):
            if hidden is not None and any(int(h) < 1 for h in hidden):
                raise DVAEInputError(
                    f"{name} hidden sizes must be >= 1, got {list(hidden)}; pass e.g. 256,128"
                )
        if self.prior not in ("uniform", "learned"):
            raise DVAEInputError(f"unknown prior {self.prior!r}; choose 'uniform' or 'learned'")
        if self.likelihood not in ("bernoulli", "normal"):
            raise DVAEInputError(
                f"unknown likelihood {self.likelihood!r}; choose 'bernoulli' or 'normal'"
            )
        if self.estimator in ("st-gumbel", "gumbel-rao") and self.kl == "relaxed":
            raise DVAEInputError(
                f"--estimator {self.estimator} cannot use --kl relaxed: its hard one-hot sample "
                "has zero density under the relaxed (Concrete) prior; use --kl analytic"
            )
        if spec.dim > MAX_LATENT_UNITS:
            raise DVAEInputError(
                f"latent '{spec}' has {spec.dim} units, over the limit of {MAX_LATENT_UNITS}; "
                "use a smaller latent, e.g. --latent 20x10"
            )
        if self.estimator in EXACT_ESTIMATORS and _too_many(spec, self.max_configurations):
            raise LatentSpaceTooLargeError(
                f"--estimator {self.estimator} enumerates all {spec.categories}^{spec.groups} = "
                f"{_big(spec)} latent configurations of '{spec}', over the limit of "
                f"{self.max_configurations}: {_enumeration_cost(spec, self)}; use a smaller "
                "latent or --estimator gumbel-softmax"
            )
        _check_model_size(self, _DATA_DIMS.get(self.dataset, 1))
        resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


def _too_many(spec: LatentSpec, limit: int) -> bool:
    """``K^N > limit`` without building a huge integer."""
    if spec.log2_configurations > math.log2(max(limit, 1)) + 1:
        return True
    return spec.num_configurations > limit


def _big(spec: LatentSpec) -> str:
    """``K^N`` in full when short, else as a power of ten."""
    log10 = spec.log2_configurations * math.log10(2)
    if log10 < 40:
        return str(spec.num_configurations)
    return f"~{_sci(log10)}"


def _sci(log10: float) -> str:
    exponent = math.floor(log10)
    return f"{10 ** (log10 - exponent):.1f}e{exponent:+d}"


def _duration(log10_seconds: float) -> str:
    for unit, seconds in (("years", 3.15576e7), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if log10_seconds >= math.log10(seconds):
            log10 = log10_seconds - math.log10(seconds)
            return f"{10**log10:.0f} {unit}" if log10 < 6 else f"{_sci(log10)} {unit}"
    return f"{10**log10_seconds:.2g} s"


def _bytes(log10_bytes: float) -> str:
    for unit, power in (("EB", 18), ("PB", 15), ("TB", 12), ("GB", 9), ("MB", 6)):
        if log10_bytes >= power:
            log10 = log10_bytes - power
            return f"{10**log10:.0f} {unit}" if log10 < 6 else f"{_sci(log10)} {unit}"
    return f"{10**log10_bytes:.0f} bytes"


def _enumeration_cost(spec: LatentSpec, config: TrainConfig) -> str:
    """What enumerating ``K^N`` configurations would cost per training step (one line)."""
    hidden = config.decoder_hidden or tuple(reversed(config.encoder_hidden)) or (1,)
    log10_k = spec.log2_configurations * math.log10(2)
    log10_pairs = log10_k + math.log10(config.batch_size)
    # the decoder's first layer alone costs 2 * dim * hidden flops per (configuration, datum)
    log10_flops = log10_pairs + math.log10(2 * spec.dim * int(hidden[0]))
    log10_mem = log10_k + math.log10(4 * spec.dim)  # every float32 code held at once
    return (
        f"a step on a batch of {config.batch_size} evaluates the decoder {_sci(log10_pairs)} "
        f"times (at least {_sci(log10_flops)} flops, about "
        f"{_duration(log10_flops - 10)} at 10 GFLOP/s), and the codes alone would take "
        f"{_bytes(log10_mem)} held at once"
    )


def _check_model_size(config: TrainConfig, data_dim: int) -> None:
    spec = LatentSpec.parse(config.latent)
    enc = [data_dim, *config.encoder_hidden, spec.dim]
    dec_hidden = config.decoder_hidden
    dec = [spec.dim, *(reversed(config.encoder_hidden) if dec_hidden is None else dec_hidden)]
    dec.append(data_dim)
    count = sum((int(a) + 1) * int(b) for layers in (enc, dec) for a, b in zip(layers, layers[1:]))
    if count > MAX_PARAMETERS:
        raise DVAEInputError(
            f"the encoder and decoder for {data_dim} features, latent '{spec}' and hidden sizes "
            f"{list(config.encoder_hidden)} would have {count:,} parameters "
            f"({_bytes(math.log10(16 * count))} with gradients and Adam state), over the limit "
            f"of {MAX_PARAMETERS:,}; use a smaller --latent or --encoder-hidden"
        )


def _positive(name: str, value: float, example: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise DVAEInputError(f"{name} must be > 0, got {value}; pass e.g. {example}")


def _positive_int(name: str, value: int, example: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DVAEInputError(f"{name} must be an integer >= 1, got {value!r}; pass e.g. {example}")


@contextlib.contextmanager
def _fixed_seed(seed: int) -> Iterator[None]:
    """Run a block under a fixed seed without disturbing the training RNG streams."""
    saved = rng_state()
    pyro.set_rng_seed(seed)
    try:
        yield
    finally:
        set_rng_state(saved)


def _batched(fn, x: torch.Tensor, batch: int = _EVAL_BATCH) -> torch.Tensor:
    return torch.cat([fn(x[i : i + batch]).detach().reshape(-1) for i in range(0, len(x), batch)])


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


def _make_schedule(config: TrainConfig):
    from .infer import ConstantTemperature, ExponentialDecayTemperature

    if config.schedule == "exponential":
        return ExponentialDecayTemperature(
            tau0=config.temperature,
            rate=config.anneal_rate,
            tau_min=config.tau_min,
            every=config.anneal_every,
        )
    return ConstantTemperature(config.temperature)


def _load_data(config: TrainConfig, dataset: Any | None) -> Any:
    from .data import load_dataset, validate_data

    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    for split in ("train", "valid", "test"):
        validate_data(
            getattr(data, split), likelihood=config.likelihood, name=f"{data.name} {split} data"
        )
    return data


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
) -> dict[str, Any]:
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
    from .distributed import DataParallelSVI, init_distributed
    from .infer import TorchOptimSVI, build_elbo
    from .models import DiscreteVAE

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
        _positive_int("checkpoint every", checkpoint_every, "--checkpoint-every 100")
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
    model = DiscreteVAE(
        data.data_dim,
        spec,
        encoder_hidden=tuple(config.encoder_hidden),
        decoder_hidden=None if config.decoder_hidden is None else tuple(config.decoder_hidden),
        prior=config.prior,
        likelihood=config.likelihood,
    ).to(device)
    elbo = build_elbo(
        config.estimator,
        temperature=config.temperature,
        kl=config.kl,
        num_particles=config.num_particles,
        max_configurations=config.max_configurations,
        gumbel_rao_samples=config.gumbel_rao_samples,
        max_plate_nesting=1,  # DiscreteVAE: one data plate
    )
    if getattr(elbo, "baseline", None) == "neural" and elbo.baseline_net is None:
        # built here rather than lazily in the first step, so that a resumed run has it to load
        from .infer.score_function_elbo import NeuralBaseline

        elbo.baseline_net = NeuralBaseline(data.data_dim, elbo.baseline_hidden).to(device)
    relaxed = config.estimator in RELAXED_ESTIMATORS
    schedule = _make_schedule(config)
    adam = lambda params: torch.optim.Adam(params, lr=config.lr)  # noqa: E731
    if ctx.is_distributed:
        nets = [model] + ([elbo.baseline_net] if getattr(elbo, "baseline_net", None) else [])
        svi = DataParallelSVI(torch.nn.ModuleList(nets), model.model, model.guide, adam, elbo, ctx)
        if ctx.rank > 0:  # independent sampling noise per rank; rank 0 keeps the usual stream
            pyro.set_rng_seed(config.seed + 7919 * ctx.rank)
    else:
        svi = TorchOptimSVI(model.model, model.guide, adam, elbo)

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
        if ckpt_path is None:
            return
        store = dict(pyro.get_param_store().named_parameters())
        bad = _non_finite_tensors(store)
        if bad:  # never replace a good checkpoint with a broken state
            raise NonFiniteLossError(
                f"{bad} at step {st.step} (epoch {st.epoch}); the last good checkpoint is kept "
                f"in {ckpt_path}"
            )
        save_checkpoint(
            ckpt_path,
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
                    loss = _guarded_step(svi, xb, st, config, ckpt_path) / xb.shape[0]
                    st.pos += xb.shape[0]
                    st.step += 1
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
                valid = _eval_elbo(model, data.valid, config.seed + 1)
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

    metrics = _evaluate(model, data, spec, config)
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
    signum: int, st: _LoopState, total_steps: int, ckpt: Path | None
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


def load_run(run: str | Path) -> tuple[TrainConfig, Path, int]:
    """The stored configuration, checkpoint file and step of a run directory (or checkpoint).

    Example:
        >>> load_run("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: --resume /nonexistent does not exist; ...
    """
    path = _checkpoint_file(run)
    ckpt = load_checkpoint(path)
    return _resume_config(ckpt, None, path), path, int(ckpt.get("step", 0))


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


def _all_rng_states(device: torch.device) -> dict[str, Any]:
    state = rng_state()
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_all_rng_states(state: dict[str, Any]) -> None:
    set_rng_state(state)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _pretty(name: str) -> str:
    return name.replace("$$$", ".")


def _non_finite_tensors(tensors: dict[str, torch.Tensor], what: str = "parameter") -> str | None:
    """``"parameter 'name' holds 1 NaN and 0 infinite value(s)"`` for the first bad one."""
    for name, t in tensors.items():
        if t is not None and not bool(torch.isfinite(t).all()):
            n_nan, n_inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            return f"{what} '{_pretty(name)}' holds {n_nan} NaN and {n_inf} infinite value(s)"
    return None


def _non_finite_site(svi: Any, xb: torch.Tensor, seed: int) -> str | None:
    """Trace guide and model on ``xb`` and name the first site whose log-prob is not finite."""
    import pyro.poutine as poutine

    try:
        with torch.no_grad(), _fixed_seed(seed), pyro.validation_enabled(False):
            guide_tr = poutine.trace(svi.guide).get_trace(xb)
            model_tr = poutine.trace(poutine.replay(svi.model, trace=guide_tr)).get_trace(xb)
            for role, tr in (("guide", guide_tr), ("model", model_tr)):
                for name, site in tr.nodes.items():
                    if site["type"] != "sample":
                        continue
                    lp = site["fn"].log_prob(site["value"])
                    if not bool(torch.isfinite(lp).all()):
                        value = lp[~torch.isfinite(lp)].reshape(-1)[0].item()
                        return f"the {role} log-prob of site '{name}' is {value}"
    except Exception:  # noqa: BLE001 - a diagnosis must never hide the original problem
        return None
    return None


def _guarded_step(
    svi: Any, xb: torch.Tensor, st: _LoopState, config: TrainConfig, ckpt: Path | None
) -> float:
    """One SVI step that never applies a NaN/inf loss or gradient: stop, or skip if asked."""
    headline, detail, loss = None, None, math.nan
    try:
        # Validate distribution arguments and shapes on the first step only: after that the
        # checks cost time on every step and non-finite values are caught below.
        with pyro.validation_enabled(st.step == 0):
            loss = svi.compute_grads(xb)
    except ValueError as e:  # distribution validation rejects NaN parameters
        detail = (
            _non_finite_tensors(dict(pyro.get_param_store().named_parameters()))
            or _non_finite_tensors({"data batch": xb}, what="the")
            or _non_finite_site(svi, xb, config.seed)
        )
        if detail is None and "nan" not in str(e).lower():
            raise
        headline = "training became non-finite"
        detail = detail or " ".join(str(e).split())[:200]
    if headline is None and not math.isfinite(loss):
        headline = f"training loss became {loss}"
        detail = (
            _non_finite_tensors(svi.parameters())
            or _non_finite_tensors({"data batch": xb}, what="the")
            or _non_finite_site(svi, xb, config.seed)
            or "no parameter or site log-prob is non-finite on its own"
        )
    if headline is None:
        grads = [p.grad for p in svi.parameters().values() if p.grad is not None]
        if grads and not math.isfinite(float(torch.nn.utils.get_total_norm(grads))):
            detail = _non_finite_tensors(
                {n: p.grad for n, p in svi.parameters().items()}, what="the gradient of"
            )
            if detail is not None:
                headline = f"a gradient became non-finite (loss {loss:.6g})"
    if headline is None:
        svi.apply_grads()
        return loss
    svi.zero_grad()
    where = f"at step {st.step + 1} (epoch {st.epoch})"
    keep = f"; the last good checkpoint is kept in {ckpt}" if ckpt is not None else ""
    hint = "; lower --lr or raise --temperature / --tau-min"
    if _non_finite_tensors(svi.parameters()) is not None:
        raise NonFiniteLossError(
            f"{headline} {where}: {detail}{keep}; skipping updates cannot repair the "
            f"parameters{hint}"
        )
    if config.on_nan != "skip":
        raise NonFiniteLossError(
            f"{headline} {where}: {detail}{keep}{hint}, or pass --on-nan skip to skip such updates"
        )
    st.skipped.append({"step": st.step + 1, "problem": f"{headline}: {detail}"})
    if len(st.skipped) > config.max_nan_skips:
        raise NonFiniteLossError(
            f"{headline} {where}: {detail}; that is {len(st.skipped)} skipped updates, more "
            f"than --max-nan-skips {config.max_nan_skips}{keep}{hint}"
        )
    _log.warning("pyro-dvae: skipped the update %s: %s: %s", where, headline, detail)
    return loss


def _eval_elbo(model, x: torch.Tensor, seed: int, num_samples: int = 1) -> float:
    from .infer import discrete_elbo

    with torch.no_grad(), _fixed_seed(seed):
        values = _batched(
            lambda xb: discrete_elbo(model.model, model.guide, xb, num_samples=num_samples), x
        )
    return -float(values.mean())


def _evaluate(model, data, spec: LatentSpec, config: TrainConfig) -> dict[str, Any]:
    from .infer import exact_log_likelihood, iwae_log_likelihood

    x = data.test
    nelbo = _eval_elbo(model, x, config.seed + 2, num_samples=10)
    batch = max(1, min(_EVAL_BATCH, 100_000 // config.iwae_samples))
    with torch.no_grad(), _fixed_seed(config.seed + 3):
        iwae = _batched(
            lambda xb: iwae_log_likelihood(
                model.model, model.guide, xb, num_samples=config.iwae_samples
            ),
            x,
            batch,
        )
    exact = None
    if spec.num_configurations <= config.max_configurations:
        with torch.no_grad():
            ll = _batched(
                lambda xb: exact_log_likelihood(
                    model.model, xb, max_configurations=config.max_configurations
                ),
                x,
            )
        exact = -float(ll.mean())
    true_ll = getattr(data, "true_test_log_likelihood", None)
    return {
        "test_nelbo": nelbo,
        "test_nll_iwae": -float(iwae.mean()),
        "test_nll_exact": exact,
        "true_test_nll": None if true_ll is None else -float(true_ll),
        "eval": {"elbo_samples": 10, "iwae_samples": config.iwae_samples},
    }


def _write_plots(model, data, history: dict, out: Path, seed: int) -> None:
    import matplotlib.pyplot as plt

    from .plots import plot_prior_samples, plot_reconstructions, plot_training_curve

    with torch.no_grad(), _fixed_seed(seed):
        x = data.test[:10]
        x_rec = model.reconstruct(x)
        samples = model.sample_x(32)
    for fig in (
        plot_training_curve(history, out / "training_curve.png"),
        plot_reconstructions(x, x_rec, data.image_shape, out / "reconstructions.png"),
        plot_prior_samples(samples, data.image_shape, out / "prior_samples.png"),
    ):
        plt.close(fig)
