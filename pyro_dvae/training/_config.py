"""The configuration of a training run: :class:`TrainConfig` and its validation.

Example:
    >>> TrainConfig(latent="2x4", epochs=1).to_dict()["latent"]
    '2x4'
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import DVAEInputError, LatentSpaceTooLargeError
from ..infer import ESTIMATORS, EXACT_ESTIMATORS, RELAXED_ESTIMATORS
from ..latent import LatentSpec
from ..models.discrete_vae import PRIORS
from ..utils.device import resolve_device
from ._limits import MAX_LATENT_UNITS, _big, _check_model_size, _enumeration_cost, _too_many

__all__ = ["DATASETS", "LR_SCHEDULES", "ON_NAN", "TrainConfig"]

DATASETS = ("digits", "mnist", "synthetic")
#: what to do when a step's loss or gradient is NaN/inf: stop, or skip the update (bounded)
ON_NAN = ("stop", "skip")
#: learning rate over the run: constant, or cosine decay from ``lr`` to 0 at the last step
LR_SCHEDULES = ("constant", "cosine")
_DATA_DIMS = {"digits": 64, "synthetic": 16, "mnist": 784}  # features of the named datasets
_MAX_SEED = 2**32 - 1  # numpy's seed range
#: estimators that can train an autoregressive prior: all but Gumbel-softmax, whose relaxed
#: (non-binary) samples the prior cannot score
AUTOREGRESSIVE_PRIOR_ESTIMATORS = tuple(e for e in ESTIMATORS if e != "gumbel-softmax")


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
    kl_warmup: int = 0
    epochs: int = 100
    max_steps: int | None = None
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    dropout: float = 0.0
    encoder_noise: float = 0.0
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
        if self.lr_schedule not in LR_SCHEDULES:
            raise DVAEInputError(
                f"unknown lr schedule {self.lr_schedule!r}; choose 'constant' or 'cosine'"
            )
        if not (
            isinstance(self.weight_decay, int | float)
            and math.isfinite(self.weight_decay)
            and self.weight_decay >= 0
        ):
            raise DVAEInputError(
                f"weight decay must be >= 0, got {self.weight_decay}; pass e.g. --weight-decay 0.01"
            )
        for name, value, flag in (
            ("dropout", self.dropout, "--dropout 0.1"),
            ("encoder noise", self.encoder_noise, "--encoder-noise 0.05"),
        ):
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise DVAEInputError(f"{name} must be in [0, 1), got {value}; pass e.g. {flag}")
        if self.encoder_noise > 0 and self.likelihood != "bernoulli":
            raise DVAEInputError(
                "encoder noise flips binary pixels and needs --likelihood bernoulli; "
                "drop --encoder-noise"
            )
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
        if (
            not isinstance(self.kl_warmup, int)
            or isinstance(self.kl_warmup, bool)
            or (self.kl_warmup < 0)
        ):
            raise DVAEInputError(
                f"kl warm-up must be an integer >= 0 (steps), got {self.kl_warmup!r}; "
                "pass e.g. --kl-warmup 10000 or 0 for none"
            )
        if self.kl_warmup and self.estimator not in RELAXED_ESTIMATORS:
            raise DVAEInputError(
                f"--kl-warmup works with the relaxed estimators ({', '.join(RELAXED_ESTIMATORS)})"
                f", not --estimator {self.estimator}; drop --kl-warmup or change the estimator"
            )
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
        if self.prior not in PRIORS:
            raise DVAEInputError(f"unknown prior {self.prior!r}; choose one of {', '.join(PRIORS)}")
        if self.prior == "autoregressive":
            if self.estimator not in AUTOREGRESSIVE_PRIOR_ESTIMATORS:
                raise DVAEInputError(
                    f"--prior autoregressive scores hard (one-hot or binary) codes; --estimator "
                    f"{self.estimator} cannot train it; use one of "
                    f"{', '.join(AUTOREGRESSIVE_PRIOR_ESTIMATORS)}"
                )
            if self.kl == "relaxed":
                raise DVAEInputError(
                    "--prior autoregressive has no relaxed (Concrete) counterpart; "
                    "use --kl analytic"
                )
        if self.likelihood not in ("bernoulli", "normal"):
            raise DVAEInputError(
                f"unknown likelihood {self.likelihood!r}; choose 'bernoulli' or 'normal'"
            )
        if self.estimator in ("st-gumbel", "gumbel-rao", "reinmax") and self.kl == "relaxed":
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


def _positive(name: str, value: float, example: str) -> None:
    if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise DVAEInputError(f"{name} must be > 0, got {value}; pass e.g. {example}")


def _positive_int(name: str, value: int, example: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DVAEInputError(f"{name} must be an integer >= 1, got {value!r}; pass e.g. {example}")
