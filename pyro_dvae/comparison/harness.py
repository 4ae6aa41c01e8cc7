"""The comparison harness: train several estimators on the same data, model, seeds and budget.

Every (estimator, seed) run goes through :func:`pyro_dvae.training.train` with the same
:class:`~pyro_dvae.training.TrainConfig` except for the estimator and its spec options, under a
:class:`~pyro_dvae.comparison.recorder.RunRecorder` that records learning curves and gradient
diagnostics. One progress bar covers the whole comparison.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..distributed import DistributedContext, init_distributed
from ..errors import DVAEInputError
from ..latent import LatentSpec
from ..training import RunMetrics, TrainConfig, train
from ..utils.device import resolve_device
from ..utils.options import comma_list, option
from ..utils.progress import is_terminal, progress_bar
from .recorder import RunRecorder
from .spec import EstimatorSpec, parse_specs

__all__ = ["DEFAULT_ESTIMATORS", "CompareConfig", "number_list", "run_comparison", "seed_list"]

_WHAT, _EVAL = "what to compare", "evaluation and gradient diagnostics"


def _opt(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002
    return field(default=default, metadata=option(help, **kwargs))


def number_list(text: str) -> tuple[float, ...]:
    """``"0.25,0.5,1"`` -> ``(0.25, 0.5, 1.0)``, an argparse ``type``.

    Example:
        >>> number_list("0.5, 1")
        (0.5, 1.0)
    """
    return comma_list(text, float, "list of numbers", "0.25,0.5,1")


def seed_list(text: str) -> tuple[int, ...]:
    """``N`` -> seeds ``0..N-1``; ``a,b,c`` -> those seeds (an argparse ``type``).

    Example:
        >>> seed_list("3"), seed_list("0,5")
        ((0, 1, 2), (0, 5))
    """
    try:
        if "," in text:
            return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --seeds {text!r}; give a count (3 -> seeds 0,1,2) or a list such as 0,5,7"
        ) from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--seeds must be >= 1, got {count}; e.g. --seeds 3")
    return tuple(range(count))


#: the default estimators: each family once, two temperatures for Gumbel-softmax; of the
#: estimators from issue 22 all but ``rebar`` (``relax`` is its control variate plus a learned
#: term at the same cost), each cheaper per step than ``exact`` and ``enumerate``
DEFAULT_ESTIMATORS = (
    "exact",
    "enumerate",
    "gumbel-softmax:tau=1",
    "gumbel-softmax:tau=0.5",
    "st-gumbel",
    "gumbel-rao",
    "gst",
    "score-function",
    "nvil",
    "vimco:particles=4",
    "rloo:particles=4",
    "disarm",
    "relax",
    "unordered-set:particles=4",
)


@dataclass
class CompareConfig:
    """What is shared by every run of a comparison (the :class:`TrainConfig` fields in ``base``).

    :ivar steps: step budget of every run.
    :ivar seeds: the training seeds; every estimator is run once per seed.
    :ivar time_budget: optional wall-clock budget per run in seconds (training clock, the
        harness's own evaluation time excluded); a run stops at whichever budget comes first.
    :ivar eval_every: test-set evaluation interval in steps (``None``: ``steps / 20``).
    :ivar eval_size: at most this many test points for the learning curves.
    :ivar diag_at: fractions of ``steps`` at which to diagnose gradients (and the last step).
    :ivar diag_samples: gradient estimates per diagnostic; ``0`` turns diagnostics off.
    :ivar diag_batch: training points in the fixed diagnostic batch.
    :ivar diag_temperatures: extra temperatures diagnosed for relaxed estimators.
    :ivar target: target test NLL for "steps/seconds to target" (``None``: chosen afterwards
        as the median of the estimators' mean final NLL).

    Example:
        >>> cfg = CompareConfig(steps=10, seeds=(0, 1))
        >>> cfg.validate()
        >>> cfg.train_config(parse_specs("st-gumbel")[0], seed=1).estimator
        'st-gumbel'
    """

    base: TrainConfig = field(default_factory=lambda: TrainConfig(iwae_samples=500))
    steps: int = _opt(500, "training steps per run", group=_WHAT)
    seeds: tuple[int, ...] = _opt(
        (0, 1, 2), "count or list of seeds", type=seed_list, metavar="N|S,S", group=_WHAT
    )
    time_budget: float | None = _opt(
        None,
        "also stop each run after this much training time",
        type=float,
        metavar="SECONDS",
        group=_WHAT,
    )
    eval_every: int | None = _opt(
        None, "test-set evaluation interval in steps (default: --steps / 20)", type=int, group=_EVAL
    )
    eval_size: int = _opt(1000, "test points for curves", group=_EVAL)
    diag_at: tuple[float, ...] = _opt(
        (0.1, 0.5),
        "checkpoints as fractions of --steps (the last step is always diagnosed)",
        type=number_list,
        metavar="F,F",
        group=_EVAL,
    )
    diag_samples: int = _opt(16, "gradient estimates; 0: off", group=_EVAL)
    diag_batch: int = _opt(50, "training points", group=_EVAL)
    diag_temperatures: tuple[float, ...] = _opt(
        (0.1, 0.25, 0.5, 1.0, 2.0),
        "temperatures diagnosed for relaxed estimators",
        type=number_list,
        metavar="T,T",
        group=_EVAL,
    )
    target: float | None = _opt(None, "target test NLL (default: auto)", type=float, group=_WHAT)

    def validate(self) -> None:
        """Raise :class:`~pyro_dvae.errors.DVAEInputError` naming the first bad value."""
        self.base.validate()
        for name, value, flag in (
            ("steps", self.steps, "--steps 500"),
            ("eval size", self.eval_size, "--eval-size 1000"),
            ("diagnostic batch", self.diag_batch, "--diag-batch 50"),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise DVAEInputError(f"{name} must be an integer >= 1, got {value!r}; pass {flag}")
        if self.eval_every is not None and (
            not isinstance(self.eval_every, int) or self.eval_every < 1
        ):
            raise DVAEInputError(
                f"eval-every must be an integer >= 1, got {self.eval_every!r}; pass --eval-every 50"
            )
        if (
            not isinstance(self.diag_samples, int)
            or self.diag_samples < 0
            or self.diag_samples == 1
        ):
            raise DVAEInputError(
                f"diagnostic samples must be 0 (off) or an integer >= 2, got "
                f"{self.diag_samples!r}; pass --diag-samples 16"
            )
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise DVAEInputError(
                f"seeds must be integers >= 0, got {list(self.seeds)}; pass --seeds 3"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise DVAEInputError(f"seeds must be distinct, got {list(self.seeds)}")
        if self.time_budget is not None and not (
            self.time_budget > 0 and math.isfinite(self.time_budget)
        ):
            raise DVAEInputError(
                f"time budget must be > 0 seconds, got {self.time_budget}; "
                "pass e.g. --time-budget 30"
            )
        if any(not 0 < f <= 1 for f in self.diag_at):
            raise DVAEInputError(
                f"diagnostic checkpoints must be fractions in (0, 1], got {list(self.diag_at)}; "
                "pass e.g. --diag-at 0.1,0.5"
            )
        if any(not (t > 0 and math.isfinite(t)) for t in self.diag_temperatures):
            raise DVAEInputError(
                f"diagnostic temperatures must be > 0, got {list(self.diag_temperatures)}; "
                "pass e.g. --diag-temperatures 0.25,0.5,1,2"
            )
        if self.target is not None and not math.isfinite(self.target):
            raise DVAEInputError(f"target NLL must be a finite number, got {self.target}")

    @property
    def exact_feasible(self) -> bool:
        """Whether the latent space is small enough for the exact NLL and exact gradients."""
        return LatentSpec.parse(self.base.latent).num_configurations <= self.base.max_configurations

    def train_config(self, spec: EstimatorSpec, seed: int, steps_per_epoch: int = 1) -> TrainConfig:
        """The :class:`TrainConfig` of one run, validated; errors name the spec."""
        epochs = max(1, math.ceil(self.steps / max(1, steps_per_epoch)))
        cfg = replace(
            self.base, **spec.train_overrides(), seed=seed, max_steps=self.steps, epochs=epochs
        )
        try:
            cfg.validate()
        except DVAEInputError as e:
            raise type(e)(f"estimator {spec.label!r}: {e}") from None
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the comparison settings."""
        out = asdict(self)
        out["base"] = self.base.to_dict()
        out["seeds"] = list(self.seeds)
        return out


def _diag_steps(config: CompareConfig) -> list[int]:
    return sorted({max(1, round(f * config.steps)) for f in config.diag_at})


def run_comparison(
    specs: Sequence[EstimatorSpec | str] | str,
    config: CompareConfig | None = None,
    *,
    dataset: Any | None = None,
    progress: bool = True,
    context: DistributedContext | None = None,
) -> dict[str, Any]:
    """Train every spec once per seed and return every number (JSON-able, see below).

    Returns ``{"config", "dataset", "estimators": [{"spec", "relaxed", "runs": [run, ...]}],
    "seconds"}`` where a run holds the final metrics of :func:`~pyro_dvae.training.train`
    (``test_nll_exact``, ``test_nelbo``, ``test_nll_iwae``, ...), the training clock
    (``train_seconds``, ``ms_per_step``: median step time), its ``curve`` and ``gradients``.
    Summaries over seeds come from :func:`pyro_dvae.comparison.summarize`.

    Under ``torchrun`` (or with a ``context`` from :func:`~pyro_dvae.distributed.init_distributed`)
    the (estimator, seed) runs are dealt out round-robin to the ranks, each run trains in its
    process alone, and every rank returns the full result (``pyro-dvae compare --nproc N``).

    Example:
        >>> cfg = CompareConfig(TrainConfig(latent="2x3", encoder_hidden=(8,)), steps=5,
        ...                     seeds=(0,), diag_samples=2)
        >>> out = run_comparison("exact,st-gumbel", cfg, progress=False)  # doctest: +SKIP
        >>> [e["spec"] for e in out["estimators"]]  # doctest: +SKIP
        ['exact', 'st-gumbel']
    """
    config = CompareConfig() if config is None else config
    specs = _as_specs(specs)
    config.validate()
    runs = _Runs.plan(config, specs, dataset)
    ctx = init_distributed(config.base.device) if context is None else context
    jobs = list(runs.configs)  # (spec, seed) in report order; rank r runs jobs r, r + W, ...
    done = ctx.gather_to_all(runs.run(jobs[ctx.rank :: ctx.world_size], progress and ctx.is_main))
    return {
        "config": config.to_dict(),
        "dataset": runs.describe_data(),
        "eval_every": runs.eval_every,
        "diag_steps": _diag_steps(config),
        "estimators": [
            {
                "spec": spec.label,
                "relaxed": spec.relaxed,
                "runs": [done[spec.label, seed] for seed in config.seeds],
            }
            for spec in specs
        ],
        "seconds": round(time.perf_counter() - runs.start, 3),
    }


def _as_specs(specs: Sequence[EstimatorSpec | str] | str) -> list[EstimatorSpec]:
    if isinstance(specs, str):
        return parse_specs(specs)
    return [s if isinstance(s, EstimatorSpec) else parse_specs([s])[0] for s in specs]


@dataclass
class _Runs:
    """The (estimator, seed) runs of a comparison and what they share: the data, the held-out
    batches of the learning curves and diagnostics, and the comparison's clock."""

    config: CompareConfig
    configs: dict[tuple[EstimatorSpec, int], TrainConfig]
    data: Any
    x_eval: Any
    x_diag: Any
    eval_every: int
    start: float = field(default_factory=time.perf_counter)

    @classmethod
    def plan(cls, config: CompareConfig, specs: list[EstimatorSpec], dataset: Any) -> _Runs:
        """Every run's :class:`TrainConfig` (validated) and the evaluation batches."""
        from ..data import load_dataset

        data = dataset
        if data is None:
            data = load_dataset(config.base.dataset, config.base.data_dir)
        steps_per_epoch = math.ceil(data.num_train / config.base.batch_size)
        configs = {
            (spec, seed): config.train_config(spec, seed, steps_per_epoch)
            for spec in specs
            for seed in config.seeds
        }
        device = resolve_device(config.base.device)  # train() moves its own copy of the data
        x_diag = None
        if config.diag_samples and config.exact_feasible:
            x_diag = data.train[: config.diag_batch].to(device)
        return cls(
            config,
            configs,
            data,
            data.test[: config.eval_size].to(device),
            x_diag,
            eval_every=config.eval_every or max(1, config.steps // 20),
        )

    def run(self, jobs: list[tuple[EstimatorSpec, int]], progress: bool) -> dict:
        """Train ``jobs`` one after the other under one progress bar (or, in a log, a line
        per run); ``{(label, seed): run record}``."""
        steps = self.config.steps
        total = len(jobs) * steps
        bar = progress_bar(
            enabled=progress, total=total, desc="compare", unit="step", dynamic_ncols=True
        )
        run_lines = progress and not is_terminal()  # a log: a line per run instead of bar frames
        done: dict[tuple[str, int], dict[str, Any]] = {}
        try:
            for spec, seed in jobs:
                bar.set_postfix_str(f"{spec.label} seed {seed}")
                before = bar.n
                recorder = self._recorder(spec, seed, on_step=lambda _step: bar.update(1))
                metrics = self._train(spec, seed, recorder)
                bar.update(steps - (bar.n - before))  # steps a time budget skipped
                done[spec.label, seed] = _run_record(seed, metrics, recorder)
                if run_lines:
                    self._log_run(spec, seed, metrics, f"{len(done)}/{len(jobs)}")
        finally:
            bar.close()
        return done

    def _recorder(self, spec: EstimatorSpec, seed: int, on_step: Any) -> RunRecorder:
        config = self.config
        return RunRecorder(
            self.x_eval,
            self.x_diag,
            total_steps=config.steps,
            eval_every=self.eval_every,
            diag_steps=_diag_steps(config),
            diag_samples=config.diag_samples,
            temperatures=config.diag_temperatures,
            relaxed=spec.relaxed,
            exact=config.exact_feasible,
            max_configurations=config.base.max_configurations,
            time_budget=config.time_budget,
            seed=seed,
            on_step=on_step,
        )

    def _train(self, spec: EstimatorSpec, seed: int, recorder: RunRecorder) -> RunMetrics:
        return train(
            self.configs[spec, seed],
            progress=False,
            dataset=self.data,
            callback=recorder.start(),
            distributed=DistributedContext(),  # independent runs, never data-parallel
        )

    def _log_run(self, spec: EstimatorSpec, seed: int, metrics: RunMetrics, count: str) -> None:
        print(
            f"compare: {spec.label} seed {seed} done ({count} runs, "
            f"{_final(metrics):.2f} nats, {time.perf_counter() - self.start:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    def describe_data(self) -> dict[str, Any]:
        """The ``"dataset"`` entry of the result."""
        data, base = self.data, self.config.base
        return {
            "name": data.name,
            "num_train": int(data.num_train),
            "num_test": int(data.num_test),
            "num_eval": int(len(self.x_eval)),
            "data_dim": int(data.data_dim),
            "latent": base.latent,
            "num_configurations": LatentSpec.parse(base.latent).num_configurations,
            "exact_feasible": self.config.exact_feasible,
            "collapsed_nll": _collapsed_nll(data, base.likelihood),
        }


def _final(metrics: RunMetrics) -> float:
    """The exact test NLL of a finished run where computed, else its test -ELBO."""
    exact = metrics.get("test_nll_exact")
    return exact if exact is not None else metrics["test_nelbo"]


def _collapsed_nll(data: Any, likelihood: str) -> float | None:
    """Test NLL (nats/datum) of independent pixel frequencies of the training set: what a VAE
    whose posterior collapsed (z ignored) reaches at best; ``None`` unless the data are binary.

    Example:
        >>> from pyro_dvae.data import load_digits
        >>> round(_collapsed_nll(load_digits(), "bernoulli"), 2)
        27.29
    """
    if likelihood != "bernoulli":
        return None
    p = data.train.double().mean(0).clamp(1e-6, 1 - 1e-6).cpu()
    x = data.test.double().cpu()
    return round(float(-(x * p.log() + (1 - x) * (-p).log1p()).sum(1).mean()), 4)


def _run_record(seed: int, metrics: RunMetrics, rec: RunRecorder) -> dict[str, Any]:
    times = sorted(rec.step_seconds)
    median = times[len(times) // 2] if times else math.nan
    return {
        "seed": seed,
        "steps": int(metrics["steps"]),
        "stopped_by_time": rec.stopped_by_time,
        "test_nll_exact": metrics["test_nll_exact"],
        "test_nelbo": metrics["test_nelbo"],
        "test_nll_iwae": metrics["test_nll_iwae"],
        "valid_nelbo": metrics["valid_nelbo"],
        "train_seconds": round(rec.train_seconds, 4),
        "ms_per_step": round(1000 * median, 4),
        "harness_seconds": round(rec.harness_seconds, 4),
        "final_temperature": metrics.get("final_temperature"),
        "curve": rec.curve,
        "gradients": rec.gradients,
    }
