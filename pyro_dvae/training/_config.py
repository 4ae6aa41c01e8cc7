"""The configuration of a training run: :class:`TrainConfig` and its validation.

Each field is declared once, with its command-line flag, help and choices in its metadata
(:func:`~pyro_dvae.utils.options.option`); ``pyro-dvae train`` and ``pyro-dvae compare`` build
their flags from it. What each estimator supports comes from the estimator registry
(:mod:`pyro_dvae.infer.registry`). Errors name options in API terms (``lr=1e-3``); the command
line rewrites them as flags.

Example:
    >>> TrainConfig(latent="2x4", epochs=1).to_dict()["latent"]
    '2x4'
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import DVAEInputError, LatentSpaceTooLargeError
from ..infer import (
    DISARM_CATEGORICAL,
    ESTIMATORS,
    EXACT_ESTIMATORS,
    KL_CHOICES,
    RELAXED_ESTIMATORS,
    estimator_names,
    get_estimator,
)
from ..infer.captured_step import CAPTURE_MODES
from ..latent import LatentSpec
from ..models.discrete_vae import LIKELIHOODS, PRIORS
from ..utils.device import DEVICES, resolve_device
from ..utils.options import hidden_sizes, option, require_positive_int
from ._limits import MAX_LATENT_UNITS, _big, _check_model_size, _enumeration_cost, _too_many

__all__ = ["DATASETS", "LR_SCHEDULES", "ON_NAN", "SCHEDULES", "TrainConfig"]

DATASETS = ("digits", "mnist", "synthetic")
#: what to do when a step's loss or gradient is NaN/inf: stop, or skip the update (bounded)
ON_NAN = ("stop", "skip")
#: learning rate over the run: constant, or cosine decay from ``lr`` to 0 at the last step
LR_SCHEDULES = ("constant", "cosine")
#: temperature over the run: constant, or exponential decay to ``tau_min``
SCHEDULES = ("constant", "exponential")
_DATA_DIMS = {"digits": 64, "synthetic": 16, "mnist": 784}  # features of the named datasets
_MAX_SEED = 2**32 - 1  # numpy's seed range
_DATA, _EST, _OPT, _OUT = "data and model", "estimator", "optimization", "evaluation and output"


def _opt(default: Any, help: str | None = None, **kwargs: Any) -> Any:  # noqa: A002
    return field(default=default, metadata=option(help, **kwargs))


@dataclass
class TrainConfig:
    """Everything that defines a training run (all JSON-able, stored in ``metrics.json``).

    The defaults train a ``4x8`` categorical VAE on the embedded digits with the Gumbel-softmax
    estimator in about a minute on two CPU cores. Every field is a ``pyro-dvae train`` flag
    (``num_particles`` is ``--particles``; ``max_configurations`` is Python only).

    Example:
        >>> cfg = TrainConfig(latent="2x4", epochs=1)
        >>> cfg.validate()
        >>> TrainConfig(lr=0.0).validate()
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: learning rate must be > 0, got 0.0; pass e.g. lr=1e-3
    """

    dataset: str = _opt("digits", "dataset to train on", choices=DATASETS, group=_DATA)
    data_dir: str | None = _opt(
        None, "directory holding the MNIST files (--dataset mnist only)", group=_DATA
    )
    latent: str = _opt("4x8", "'NxK' categorical groups (e.g. 4x8) or 'Nb' Bernoulli", group=_DATA)
    estimator: str = _opt(
        "gumbel-softmax",
        "gradient estimator for the discrete latents: relaxed "
        f"({', '.join(RELAXED_ESTIMATORS)}), exact sums over every code "
        f"({', '.join(EXACT_ESTIMATORS)}) or score-function family (the rest); see the "
        "estimators guide",
        choices=lambda: ESTIMATORS,
        group=_EST,
    )
    kl: str = _opt("analytic", "KL term of relaxed estimators", choices=KL_CHOICES, group=_EST)
    temperature: float = _opt(
        1.0, "temperature tau of the relaxed estimators (the start of --schedule)", group=_EST
    )
    schedule: str = _opt(
        "constant",
        "tau over the run: constant, or exponential: tau = max(--tau-min, --temperature * "
        "exp(-rate * step)), updated every --anneal-every steps",
        choices=SCHEDULES,
        group=_EST,
    )
    anneal_rate: float = _opt(3e-5, "tau decay rate per step (--schedule exponential)", group=_EST)
    anneal_every: int = _opt(
        1000, "update tau every this many steps (--schedule exponential)", group=_EST
    )
    tau_min: float = _opt(0.5, "lowest tau (--schedule exponential)", group=_EST)
    kl_warmup: int = _opt(
        0,
        "raise the KL weight linearly from 0 to 1 over this many steps (relaxed estimators; "
        "0: the ELBO from the first step)",
        metavar="STEPS",
        group=_EST,
    )
    epochs: int = _opt(
        100, "passes over the training set (with --resume: more extend a finished run)", group=_OPT
    )
    max_steps: int | None = _opt(
        None, "stop after this many steps (default: --epochs alone)", type=int, group=_OPT
    )
    batch_size: int = _opt(100, "training data points per step", group=_OPT)
    lr: float = _opt(1e-3, "Adam learning rate", group=_OPT)
    lr_schedule: str = _opt(
        "constant",
        "cosine: decay the learning rate from --lr to 0 over the run",
        choices=LR_SCHEDULES,
        group=_OPT,
    )
    weight_decay: float = _opt(0.0, "decoupled weight decay (AdamW) when > 0", group=_OPT)
    dropout: float = _opt(
        0.0,
        "dropout probability after every hidden layer of encoder and decoder (training only)",
        group=_OPT,
    )
    encoder_noise: float = _opt(
        0.0,
        "probability of flipping each pixel the encoder sees in training (denoising)",
        group=_OPT,
    )
    seed: int = _opt(
        0,
        "seed of the initial weights, data order and samples (same seed, same numbers)",
        group=_OPT,
    )
    device: str = _opt("cpu", "where to train: cpu or cuda", choices=DEVICES, group=_OPT)
    encoder_hidden: tuple[int, ...] = _opt(
        (256, 128),
        "hidden layer widths of the encoder, comma separated",
        type=hidden_sizes,
        metavar="H,H",
        group=_DATA,
    )
    decoder_hidden: tuple[int, ...] | None = _opt(
        None,
        "hidden layer widths of the decoder (default: the encoder's, reversed)",
        type=hidden_sizes,
        metavar="H,H",
        group=_DATA,
    )
    prior: str = _opt(
        "uniform",
        "p(z): uniform, learned (trainable logits) or autoregressive (learned, models "
        "correlated codes; hard-sample estimators with --kl analytic)",
        choices=PRIORS,
        group=_DATA,
    )
    likelihood: str = _opt(
        "bernoulli",
        "p(x|z): bernoulli (binary data) or normal (learned per-feature scale)",
        choices=LIKELIHOODS,
        group=_DATA,
    )
    num_particles: int = _opt(1, "samples per datum per step", flag="--particles", group=_EST)
    gumbel_rao_samples: int = _opt(
        10, "conditional Gumbel samples of --estimator gumbel-rao", group=_EST
    )
    disarm_categorical: str = _opt(
        "stick-breaking",
        "categorical sites of --estimator disarm: stick-breaking DisARM (Dong et al. 2021) or "
        "loo (two independent samples, leave-one-out baseline)",
        choices=DISARM_CATEGORICAL,
        group=_EST,
    )
    iwae_samples: int = _opt(
        1000, "importance samples per test datum of the IWAE bound on the NLL", group=_OUT
    )
    max_configurations: int = _opt(2**20, cli=False)
    on_nan: str = _opt(
        "stop",
        "when a loss or gradient is NaN/inf: stop (keeping the last good checkpoint) or skip "
        "that update",
        choices=ON_NAN,
        group=_OPT,
    )
    max_nan_skips: int = _opt(
        10, "with --on-nan skip: stop after this many skipped updates", group=_OPT
    )
    compile: str = _opt(
        "auto",
        "capture the training step once and replay its tensor operations instead of running "
        "Pyro's handlers every step (exact, checked against eager steps): auto where the "
        "estimator allows it (and compiled too when at least 20,000 steps share one "
        "temperature), on (an error where it does not), compiled (as on, and the replayed "
        "graph compiled by inductor: tens of seconds once, then faster steps), off",
        choices=CAPTURE_MODES,
        group=_OPT,
    )

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
        self._check_choices()
        spec = LatentSpec.parse(self.latent)
        self._check_numbers()
        self._check_estimator(spec)
        if spec.dim > MAX_LATENT_UNITS:
            raise DVAEInputError(
                f"latent '{spec}' has {spec.dim} units, over the limit of {MAX_LATENT_UNITS}; "
                "use a smaller latent, e.g. latent='20x10'"
            )
        _check_model_size(self, _DATA_DIMS.get(self.dataset, 1))
        resolve_device(self.device)

    def _check_choices(self) -> None:
        for f in fields(self):
            opt = f.metadata.get("pyro_dvae.option")
            if opt is None or opt.choices is None or f.name == "device":  # device: resolved
                continue
            choices = opt.choices() if callable(opt.choices) else opt.choices
            value = getattr(self, f.name)
            if value not in choices:
                label = f.name.replace("_", " ") if f.name != "on_nan" else "on-nan"
                raise DVAEInputError(
                    f"unknown {label} {value!r}; choose one of {', '.join(choices)}"
                )

    def _check_numbers(self) -> None:
        _positive("temperature", self.temperature, "temperature=1.0")
        _positive("tau-min", self.tau_min, "tau_min=0.5")
        _positive("learning rate", self.lr, "lr=1e-3")
        _non_negative("weight decay", self.weight_decay, "weight_decay=0.01")
        _non_negative("anneal rate", self.anneal_rate, "anneal_rate=3e-5")
        for name, value, example in (
            ("dropout", self.dropout, "dropout=0.1"),
            ("encoder noise", self.encoder_noise, "encoder_noise=0.05"),
        ):
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise DVAEInputError(f"{name} must be in [0, 1), got {value}; pass e.g. {example}")
        if self.encoder_noise > 0 and self.likelihood != "bernoulli":
            raise DVAEInputError(
                "encoder noise flips binary pixels and needs likelihood='bernoulli'; "
                "set encoder_noise=0"
            )
        for name, value, example in (
            ("epochs", self.epochs, "epochs=10"),
            ("batch size", self.batch_size, "batch_size=100"),
            ("anneal-every", self.anneal_every, "anneal_every=1000"),
            ("iwae samples", self.iwae_samples, "iwae_samples=1000"),
            ("num particles", self.num_particles, "num_particles=1"),
            ("gumbel-rao samples", self.gumbel_rao_samples, "gumbel_rao_samples=10"),
            ("max configurations", self.max_configurations, "max_configurations=2**20"),
            ("max nan skips", self.max_nan_skips, "max_nan_skips=10"),
        ):
            require_positive_int(name, value, example)
        if self.max_steps is not None:
            require_positive_int("max steps", self.max_steps, "max_steps=100")
        if (
            not isinstance(self.kl_warmup, int)
            or isinstance(self.kl_warmup, bool)
            or self.kl_warmup < 0
        ):
            raise DVAEInputError(
                f"kl warm-up must be an integer >= 0 (steps), got {self.kl_warmup!r}; "
                "pass e.g. kl_warmup=10000 or 0 for none"
            )
        if not isinstance(self.seed, int) or not 0 <= self.seed <= _MAX_SEED:
            raise DVAEInputError(
                f"seed must be an integer in [0, {_MAX_SEED}], got {self.seed!r}; pass e.g. seed=0"
            )
        for name, hidden in (("encoder", self.encoder_hidden), ("decoder", self.decoder_hidden)):
            if hidden is not None and any(int(h) < 1 for h in hidden):
                raise DVAEInputError(
                    f"{name} hidden sizes must be >= 1, got {list(hidden)}; pass e.g. 256,128"
                )

    def _check_estimator(self, spec: LatentSpec) -> None:
        """What the estimator supports (from the registry) against the rest of the config."""
        info = get_estimator(self.estimator)
        if self.kl_warmup and not info.relaxed:
            raise DVAEInputError(
                f"kl_warmup works with the relaxed estimators "
                f"({', '.join(estimator_names(relaxed=True))}), not "
                f"estimator='{self.estimator}'; set kl_warmup=0 or change the estimator"
            )
        if self.prior not in info.priors:
            able = [n for n in estimator_names() if self.prior in get_estimator(n).priors]
            raise DVAEInputError(
                f"prior='{self.prior}' scores hard (one-hot or binary) codes; "
                f"estimator='{self.estimator}' cannot train it; use one of {', '.join(able)}"
            )
        if self.prior == "autoregressive" and self.kl == "relaxed":
            raise DVAEInputError(
                "prior='autoregressive' has no relaxed (Concrete) counterpart; use kl='analytic'"
            )
        if info.kl_modes and self.kl not in info.kl_modes:
            raise DVAEInputError(
                f"estimator='{self.estimator}' cannot use kl='{self.kl}': its hard one-hot sample "
                f"has zero density under the relaxed (Concrete) prior; use kl='{info.kl_modes[0]}'"
            )
        if info.exact and _too_many(spec, self.max_configurations):
            raise LatentSpaceTooLargeError(
                f"estimator='{self.estimator}' enumerates all {spec.categories}^{spec.groups} = "
                f"{_big(spec)} latent configurations of '{spec}', over the limit of "
                f"{self.max_configurations}: {_enumeration_cost(spec, self)}; use a smaller "
                "latent or estimator='gumbel-softmax'"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))


def _positive(name: str, value: float, example: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise DVAEInputError(f"{name} must be > 0, got {value}; pass e.g. {example}")


def _non_negative(name: str, value: float, example: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise DVAEInputError(f"{name} must be >= 0, got {value}; pass e.g. {example}")
