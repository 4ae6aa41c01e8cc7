"""The :class:`Trainer`: one training run's model, ELBO, optimizer, loop state and RNG.

:func:`~pyro_dvae.training.train` is a thin wrapper around it (run directory, resuming, plots,
``metrics.json``); use the Trainer directly to drive training step by step.

Example:
    >>> from pyro_dvae.data import load_digits
    >>> from pyro_dvae.training import TrainConfig
    >>> cfg = TrainConfig(latent="2x3", encoder_hidden=(16,), max_steps=4, iwae_samples=5)
    >>> trainer = Trainer(cfg, load_digits())
    >>> loss = trainer.step(trainer.data.train[:50])
    >>> trainer.state.step
    1
    >>> trainer.fit()
    >>> trainer.state.step, trainer.evaluate()["test_nll_exact"] > 0
    (4, True)
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch

from ..errors import DVAEInputError, NonFiniteLossError
from ..latent import LatentSpec
from ..utils.checkpoint import (
    CHECKPOINT_FORMAT,
    data_fingerprint,
    rng_state,
    save_checkpoint,
    set_rng_state,
    versions,
)
from ..utils.device import resolve_device
from ..utils.progress import is_terminal, progress_bar
from ._config import TrainConfig
from ._guards import _guarded_step, _non_finite_tensors
from ._limits import _too_many
from ._signals import _interrupted, _StopSignals
from ._state import LoopState
from .evaluation import RunMetrics, evaluate_nelbo, evaluate_run

__all__ = ["Trainer"]

#: ``callback(step, model, elbo)`` after every step; a truthy return ends training there
Callback = Callable[[int, Any, Any], "bool | None"]


class Trainer:
    """A training run: model, ELBO, optimizer (SVI), loop state and RNG, built from ``config``.

    Building seeds every RNG with ``config.seed`` and clears Pyro's param store, then creates the
    :class:`~pyro_dvae.models.DiscreteVAE`, the ELBO of ``config.estimator`` (from the estimator
    registry), the temperature schedule and the optimizer, in this order: the same config gives
    the same run. ``data`` is a :class:`~pyro_dvae.data.BinaryDataset` (validated, moved to
    ``config.device``); ``distributed`` a :class:`~pyro_dvae.distributed.DistributedContext`
    (default: this process alone).

    :meth:`step` trains on one batch, :meth:`fit` runs the epochs (checkpointing, Ctrl-C),
    :meth:`evaluate` gives the test metrics, :meth:`save` and :meth:`restore` write and read the
    whole state (bitwise: a restored run continues exactly as the uninterrupted one).

    Example:
        >>> from pyro_dvae.data import load_digits
        >>> trainer = Trainer(TrainConfig(latent="2x3", encoder_hidden=(8,), max_steps=2),
        ...                   load_digits())
        >>> trainer.total_steps, type(trainer.elbo).__name__
        (2, 'GumbelSoftmaxELBO')
    """

    def __init__(self, config: TrainConfig, data: Any, *, distributed: Any | None = None) -> None:
        from ..distributed import DistributedContext

        config.validate()
        self.config = config
        self.ctx = DistributedContext() if distributed is None else distributed
        self.device = resolve_device(config.device)
        self.spec = LatentSpec.parse(config.latent)
        self.data = _validated(data, config).to(self.device)
        self.data_info = data_fingerprint(self.data)
        pyro.set_rng_seed(config.seed)
        pyro.clear_param_store()
        self.model, self.elbo, self.schedule, self.svi = _build(
            config, self.spec, self.data, self.device, self.ctx
        )
        self.relaxed = config.estimator in _relaxed_estimators()
        self.generator = torch.Generator().manual_seed(config.seed)  # the data shuffling
        self.state = LoopState(tau=float(config.temperature))
        self.total_steps = _total_steps(config, self.data.train.shape[0])
        self.checkpoint_path: Path | None = None  # where fit() checkpoints (None: nowhere)
        self._epoch_lines = False  # fit(progress=True) with stderr not a terminal
        self.clock_start = time.perf_counter()  # this process's share of the training clock

    # ------------------------------------------------------------------ training ----------
    def step(self, xb: torch.Tensor) -> float:
        """One guarded SVI step on the batch ``xb`` (temperature, KL warm-up and learning rate
        follow their schedules); returns the loss per datum (NaN/inf: see ``config.on_nan``)."""
        st, config = self.state, self.config
        if self.relaxed:
            st.tau = float(self.schedule(st.step))
            self.elbo.temperature = st.tau
            if config.kl_warmup:
                self.elbo.kl_weight = min(1.0, (st.step + 1) / config.kl_warmup)
        loss = _guarded_step(self.svi, xb, st, config, self.checkpoint_path) / xb.shape[0]
        st.step += 1
        if config.lr_schedule != "constant" and self.svi.optimizer is not None:
            lr = _learning_rate(config, st.step, self.total_steps)
            for group in self.svi.optimizer.param_groups:  # for the next step
                group["lr"] = lr
        st.history["loss"].append(loss if math.isfinite(loss) else None)
        st.history["tau"].append(st.tau)
        return loss

    def fit(
        self,
        *,
        checkpoint: str | Path | None = None,
        checkpoint_every: int | None = None,
        progress: bool = False,
        callback: Callback | None = None,
    ) -> None:
        """Train until ``total_steps`` (or until ``callback(step, model, elbo)`` returns a truthy
        value), validating after every epoch. With ``checkpoint`` (a file path), saves there
        after every epoch, every ``checkpoint_every`` steps and on SIGINT/SIGTERM (then raises
        :class:`~pyro_dvae.training.TrainingInterrupted`).

        ``progress`` draws a progress bar where stderr is a terminal, and prints one line per
        epoch to stderr where it is not (a log file or a pipe: no bar frames)."""
        self.checkpoint_path = None if checkpoint is None else Path(checkpoint)
        bar = progress_bar(
            enabled=progress,
            total=self.total_steps,
            initial=self.state.step,
            desc="train",
            unit="step",
            leave=False,
        )
        self._epoch_lines = progress and not is_terminal()
        # non-finite values are reported by _guarded_step, in one line, instead of Pyro's warnings
        quiet = warnings.catch_warnings()
        with quiet, _StopSignals(enabled=self.checkpoint_path is not None) as stop:
            warnings.filterwarnings(
                "ignore", message="Encountered (NaN|[+-/]*Inf)", category=UserWarning
            )
            try:
                self.model.train()  # dropout and encoder noise on; evaluation switches them off
                while self.state.step < self.total_steps or self.state.perm is not None:
                    self._epoch(bar, stop, callback, checkpoint_every)
            finally:
                bar.close()
        if stop.signum is not None:  # arrived after the last check; the epoch's checkpoint is saved
            raise self._interrupted(stop.signum)

    def _epoch(self, bar: Any, stop: _StopSignals, callback: Any, every: int | None) -> None:
        """The rest of the current epoch (a new one if none is under way), then validation."""
        st, x_train = self.state, self.data.train
        n, first = x_train.shape[0], len(st.history["loss"])
        if st.perm is None:
            st.epoch += 1
            st.perm, st.pos = torch.randperm(n, generator=self.generator), 0
        perm = st.perm.to(x_train.device)
        while st.pos < n and st.step < self.total_steps:
            xb = x_train[perm[st.pos : st.pos + self.config.batch_size]]
            loss = self.step(xb)
            st.pos += xb.shape[0]
            bar.update(1)
            if callback is not None and callback(st.step, self.model, self.elbo):
                self.total_steps = st.step  # the callback asked to stop here
            if st.step % 10 == 0 or st.step == self.total_steps:
                bar.set_postfix(loss=f"{loss:.2f}", tau=f"{st.tau:.3f}", epoch=st.epoch)
            if stop.signum is not None:
                self._checkpoint()
                raise self._interrupted(stop.signum)
            if every is not None and st.step % every == 0:
                self._checkpoint()
        valid = evaluate_nelbo(self.model, self.data.valid, seed=self.config.seed + 1)
        st.history["valid_step"].append(st.step)
        st.history["valid_nelbo"].append(valid)
        if self._epoch_lines:
            print(self._epoch_line(first, valid), file=sys.stderr, flush=True)
        st.perm, st.pos = None, 0
        self._checkpoint()
        if stop.signum is not None:
            raise self._interrupted(stop.signum)

    def _epoch_line(self, first: int, valid: float) -> str:
        """``epoch 3: step 42/1400, loss 31.20, valid -ELBO 30.95, 2.1 s``: the mean training
        loss of the epoch's steps from history entry ``first`` on (this process's)."""
        st = self.state
        losses = [v for v in st.history["loss"][first:] if v is not None]
        loss = f"{sum(losses) / len(losses):.2f}" if losses else "n/a"
        tau = f", tau {st.tau:.3f}" if self.relaxed else ""
        return (
            f"epoch {st.epoch}: step {st.step}/{self.total_steps}, loss {loss}, valid -ELBO "
            f"{valid:.2f}{tau}, {self.train_seconds:.1f} s"
        )

    def _check_new_length(self, stored: dict[str, Any], step: int, path: Any) -> None:
        """Refuse a run length (``epochs``, ``max_steps``) that a resumed run at ``step`` cannot
        take without changing its past: shorter than ``step``, or any change of length under
        ``lr_schedule='cosine'`` (whose rate at every step depends on the length). The
        temperature schedule, KL warm-up and a constant learning rate depend on the step
        alone, so a longer run continues them exactly as an uninterrupted run of that length
        would; so do the data order and every RNG. One exception: a run that ``max_steps``
        ended inside an epoch was validated there and starts a new epoch when extended, where
        an uninterrupted run would have gone on with the cut one."""
        config = self.config
        try:
            old = _total_steps(TrainConfig.from_dict(stored), self.data.train.shape[0])
        except (DVAEInputError, TypeError):
            return  # a malformed configuration is reported by the caller
        new = self.total_steps
        if new == old:
            return
        length = f"epochs={config.epochs}" + (
            f", max_steps={config.max_steps}" if config.max_steps is not None else ""
        )
        if new < step:
            raise DVAEInputError(
                f"checkpoint {path} is at step {step}, past the {new} steps of {length}; "
                f"pass a length of at least {step} steps to resume it"
            )
        if config.lr_schedule == "cosine" and step > 0:
            raise DVAEInputError(
                f"cannot change the length of {path} from {old} to {new} steps: "
                f"lr_schedule='cosine' decays the learning rate to 0 over the run's length, so "
                f"the rates of its {step} steps taken would change; resume with its own length "
                "or start a new run"
            )

    def _interrupted(self, signum: int) -> Exception:
        return _interrupted(signum, self.state, self.total_steps, self.checkpoint_path)

    def _checkpoint(self) -> None:
        if self.checkpoint_path is not None:
            self.save(self.checkpoint_path)

    # ------------------------------------------------------------------ evaluation --------
    def evaluate(self) -> dict[str, Any]:
        """The test metrics of the model now (:func:`~pyro_dvae.training.evaluate_run`)."""
        return evaluate_run(self.model, self.data, self.config)

    @property
    def train_seconds(self) -> float:
        """Training seconds so far, a resumed run's earlier processes included."""
        return self.state.elapsed + (time.perf_counter() - self.clock_start)

    def metrics(self) -> RunMetrics:
        """:meth:`evaluate` and the description of the run: what ``metrics.json`` holds (but
        ``seconds``, the wall-clock time of the whole call, which the caller adds)."""
        st, data, spec = self.state, self.data, self.spec
        train_seconds = self.train_seconds
        metrics: Any = self.evaluate()
        metrics.update(
            dataset=data.name,
            latent=str(spec),
            estimator=self.config.estimator,
            num_configurations=None if _too_many(spec, 10**300) else spec.num_configurations,
            log2_num_configurations=spec.log2_configurations,
            data_dim=data.data_dim,
            num_train=int(data.train.shape[0]),
            num_valid=int(data.valid.shape[0]),
            num_test=int(data.test.shape[0]),
            valid_nelbo=st.history["valid_nelbo"][-1],
            final_temperature=st.tau if self.relaxed else None,
            steps=st.step,
            epochs_completed=st.epoch,
            skipped_steps=st.skipped,
            train_seconds=round(train_seconds, 3),
            device=str(self.device),
            distributed={"world_size": self.ctx.world_size, "backend": self.ctx.backend},
            config=self.config.to_dict(),
            versions=versions(),
            history=st.history,
        )
        return metrics

    # ------------------------------------------------------------------ checkpoints -------
    def save(self, path: str | Path) -> None:
        """Write the whole state to ``path`` atomically (model, param store, optimizer, step and
        epoch position, every RNG, temperature, history, config, data fingerprint). A
        non-finite parameter is refused, keeping the last good checkpoint."""
        path, st = Path(path), self.state
        store = dict(pyro.get_param_store().named_parameters())
        bad = _non_finite_tensors(store)
        if bad:  # never replace a good checkpoint with a broken state
            raise NonFiniteLossError(
                f"{bad} at step {st.step} (epoch {st.epoch}); the last good checkpoint is kept "
                f"in {path}"
            )
        save_checkpoint(
            path,
            model_state=self.model.state_dict(),
            optimizer_state=self.svi.state_dict(),
            step=st.step,
            config=self.config.to_dict(),
            rng=rng_state(self.device),
            extra={
                "epoch": st.epoch,
                "epoch_position": st.pos,
                "permutation": st.perm,
                "shuffle_rng": self.generator.get_state(),
                "param_store": {k: v.detach().cpu().clone() for k, v in store.items()},
                "temperature": {"schedule": repr(self.schedule), "tau": st.tau},
                "history": st.history,
                "skipped_steps": st.skipped,
                "train_seconds": self.train_seconds,
                "data": self.data_info,
                "versions": versions(),
            },
        )

    def restore(self, ckpt: dict[str, Any], path: str | Path = "checkpoint") -> None:
        """Put model, param store, optimizer, RNGs and loop state where ``ckpt`` (a loaded
        :meth:`save` checkpoint; ``path`` names it in errors) left them.

        The run's length (``epochs``, ``max_steps``) may differ from the checkpoint's, to extend
        a finished run or shorten an unfinished one, where the schedules allow it (the rules are
        those of ``Trainer._check_new_length``)."""
        st, elbo = self.state, self.elbo
        if isinstance(ckpt.get("config"), dict) and "step" in ckpt:
            self._check_new_length(ckpt["config"], int(ckpt["step"]), path)
        try:
            self.model.load_state_dict(ckpt["model_state"])
            saved = dict(ckpt["param_store"])
            pyro.module(self.model.name, self.model)
            net = getattr(elbo, "baseline_net", None)
            prefix = f"{getattr(elbo, 'baseline_name', '')}$$$"
            if net is not None and any(k.startswith(prefix) for k in saved):  # else: not used yet
                net.load_state_dict(
                    {k[len(prefix) :]: v for k, v in saved.items() if k.startswith(prefix)}
                )
                pyro.module(elbo.baseline_name, net)
            store = pyro.get_param_store()
            device = next(self.model.parameters()).device
            for name, value in saved.items():
                if name not in store:
                    pyro.param(name, value.to(device).clone())
            self.svi.load_state_dict(ckpt["optimizer_state"])
            self.generator.set_state(ckpt["shuffle_rng"])
            set_rng_state(ckpt["rng_state"])
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


def _relaxed_estimators() -> tuple[str, ...]:
    from ..infer import estimator_names

    return estimator_names(relaxed=True)


def _validated(data: Any, config: TrainConfig) -> Any:
    from ..data import validate_data

    for split in ("train", "valid", "test"):
        validate_data(
            getattr(data, split), likelihood=config.likelihood, name=f"{data.name} {split} data"
        )
    return data


def _total_steps(config: TrainConfig, num_train: int) -> int:
    """The steps of a run: ``epochs`` passes over ``num_train`` points, at most ``max_steps``.

    Example:
        >>> _total_steps(TrainConfig(epochs=3, batch_size=100), 1397)
        42
    """
    total = config.epochs * math.ceil(num_train / config.batch_size)
    return total if config.max_steps is None else min(total, config.max_steps)


def _make_schedule(config: TrainConfig) -> Any:
    from ..infer import ConstantTemperature, ExponentialDecayTemperature

    if config.schedule == "exponential":
        return ExponentialDecayTemperature(
            tau0=config.temperature,
            rate=config.anneal_rate,
            tau_min=config.tau_min,
            every=config.anneal_every,
        )
    return ConstantTemperature(config.temperature)


def _learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``total_steps``.

    Example:
        >>> cfg = TrainConfig(lr=1e-3, lr_schedule="cosine")
        >>> _learning_rate(cfg, 0, 100), _learning_rate(cfg, 50, 100), _learning_rate(cfg, 100, 100)
        (0.001, 0.0005, 0.0)
    """
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(1.0, step / max(1, total_steps))
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))


def _build(
    config: TrainConfig, spec: LatentSpec, data: Any, device: torch.device, ctx: Any
) -> tuple[Any, Any, Any, Any]:
    """The model, ELBO, temperature schedule and SVI of a run, in this order (it fixes the
    parameters' initial values drawn from the RNG)."""
    from ..distributed import DataParallelSVI
    from ..infer import TorchOptimSVI, build_elbo
    from ..infer.captured_step import supports_capture
    from ..models import DiscreteVAE

    model = DiscreteVAE(
        data.data_dim,
        spec,
        encoder_hidden=tuple(config.encoder_hidden),
        decoder_hidden=None if config.decoder_hidden is None else tuple(config.decoder_hidden),
        prior=config.prior,
        likelihood=config.likelihood,
        dropout=config.dropout,
        encoder_noise=config.encoder_noise,
    ).to(device)
    elbo = build_elbo(
        config.estimator,
        temperature=config.temperature,
        kl=config.kl,
        num_particles=config.num_particles,
        max_configurations=config.max_configurations,
        gumbel_rao_samples=config.gumbel_rao_samples,
        disarm_categorical=config.disarm_categorical,
        max_plate_nesting=1,  # DiscreteVAE: one data plate
    )
    if getattr(elbo, "baseline", None) == "neural" and elbo.baseline_net is None:
        # built here rather than lazily in the first step, so that a resumed run has it to load
        from ..infer.score_function_elbo import NeuralBaseline

        elbo.baseline_net = NeuralBaseline(data.data_dim, elbo.baseline_hidden).to(device)
    schedule = _make_schedule(config)
    if config.weight_decay > 0:  # decoupled weight decay (Loshchilov & Hutter, arXiv:1711.05101)
        adam = lambda params: torch.optim.AdamW(  # noqa: E731
            params, lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        adam = lambda params: torch.optim.Adam(params, lr=config.lr)  # noqa: E731
    if ctx.is_distributed:
        nets = [model] + ([elbo.baseline_net] if getattr(elbo, "baseline_net", None) else [])
        svi = DataParallelSVI(torch.nn.ModuleList(nets), model.model, model.guide, adam, elbo, ctx)
        if ctx.rank > 0:  # independent sampling noise per rank; rank 0 keeps the usual stream
            pyro.set_rng_seed(config.seed + 7919 * ctx.rank)
    else:
        if config.compile in ("on", "compiled") and not supports_capture(elbo):
            raise DVAEInputError(
                f"estimator '{config.estimator}' keeps state between steps, so its step cannot "
                "be captured and replayed; use compile='auto' or compile='off'"
            )
        svi = TorchOptimSVI(
            model.model,
            model.guide,
            adam,
            elbo,
            capture=config.compile,
            steady_steps=_steady_steps(config, schedule, data.train.shape[0]),
        )
    return model, elbo, schedule, svi


def _steady_steps(config: TrainConfig, schedule: Any, num_train: int) -> int:
    """The steps of the run after the temperature and the KL weight stopped changing: how
    long a captured graph would be replayed (``compile='auto'`` compiles it if that is long)."""
    total = _total_steps(config, num_train)
    settled = config.kl_warmup
    if config.schedule != "constant":  # the step at which tau reaches its floor
        every = max(1, config.anneal_every)
        floor = schedule(total)
        settled = max(
            settled,
            next((s for s in range(0, total, every) if schedule(s) == floor), total),
        )
    return max(0, total - settled)
