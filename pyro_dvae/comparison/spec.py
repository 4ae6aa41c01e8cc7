"""Estimator specs: ``NAME[:KEY=VALUE...]``, e.g. ``gumbel-softmax:tau=0.5:kl=analytic``.

``NAME`` is one of :data:`~pyro_dvae.infer.ESTIMATORS`. Options (each at most once):

- ``tau=T``: temperature of a relaxed estimator (``gumbel-softmax``, ``st-gumbel``,
  ``gumbel-rao``, ``reinmax``);
- ``kl=analytic|relaxed``: the KL term of ``gumbel-softmax`` (``st-gumbel``: ``analytic`` only);
- ``particles=P``: samples per datum per step (every sampling estimator; ``vimco`` needs >= 2);
- ``samples=M``: conditional Gumbel samples of ``gumbel-rao``;
- ``categorical=stick-breaking|loo``: how ``disarm`` treats categorical sites (stick-breaking
  DisARM, or two independent samples with a leave-one-out baseline);
- ``lr=LR``: a learning rate for this estimator only (default: the comparison's).

A list of specs is comma separated: ``exact,gumbel-softmax:tau=0.5,nvil``. Options not given
take the comparison's defaults; a spec's :attr:`~EstimatorSpec.label` is its canonical text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from ..errors import DVAEInputError
from ..infer import DISARM_CATEGORICAL, KL_CHOICES, estimator_names, get_estimator

__all__ = ["SPEC_OPTIONS", "EstimatorSpec", "parse_spec", "parse_specs"]

#: option key -> (EstimatorSpec field, estimators it applies to, example value); which
#: estimators take an option comes from the estimator registry (:mod:`pyro_dvae.infer.registry`)
SPEC_OPTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "tau": ("temperature", estimator_names(option="temperature"), "0.5"),
    "kl": ("kl", estimator_names(option="kl"), "analytic"),
    "particles": ("particles", estimator_names(option="num_particles"), "4"),
    "samples": ("gumbel_rao_samples", estimator_names(option="gumbel_rao_samples"), "10"),
    "categorical": (
        "disarm_categorical",
        estimator_names(option="disarm_categorical"),
        "loo",
    ),
    "lr": ("lr", estimator_names(), "1e-3"),
}
_ALIASES = {"temperature": "tau", "t": "tau"}
#: options that take one of a few words rather than a number
_WORDS = {"kl": KL_CHOICES, "categorical": DISARM_CATEGORICAL}
_TRAIN_FIELDS = {  # EstimatorSpec field -> TrainConfig field
    "temperature": "temperature",
    "kl": "kl",
    "particles": "num_particles",
    "gumbel_rao_samples": "gumbel_rao_samples",
    "disarm_categorical": "disarm_categorical",
    "lr": "lr",
}


@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator of a comparison and the options that differ from the comparison's defaults.

    ``None`` means "use the comparison's default" (see :meth:`train_overrides`).

    Example:
        >>> spec = parse_spec("gumbel-softmax:kl=analytic:tau=0.5")
        >>> spec.label, spec.temperature, spec.relaxed
        ('gumbel-softmax:tau=0.5:kl=analytic', 0.5, True)
        >>> spec.train_overrides()
        {'estimator': 'gumbel-softmax', 'temperature': 0.5, 'kl': 'analytic'}
    """

    estimator: str
    temperature: float | None = None
    kl: str | None = None
    particles: int | None = None
    gumbel_rao_samples: int | None = None
    disarm_categorical: str | None = None
    lr: float | None = None

    @property
    def relaxed(self) -> bool:
        """Whether the estimator's gradient goes through a temperature-``tau`` relaxation."""
        return get_estimator(self.estimator).relaxed

    @property
    def label(self) -> str:
        """The canonical spec text (options in the order of :data:`SPEC_OPTIONS`)."""
        parts = [self.estimator]
        for key, (attr, _, _) in SPEC_OPTIONS.items():
            value = getattr(self, attr)
            if value is not None:
                parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
        return ":".join(parts)

    def train_overrides(self) -> dict[str, Any]:
        """The :class:`~pyro_dvae.training.TrainConfig` fields this spec sets."""
        out: dict[str, Any] = {"estimator": self.estimator}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _TRAIN_FIELDS and value is not None:
                out[_TRAIN_FIELDS[f.name]] = value
        return out

    def __str__(self) -> str:
        return self.label


def _number(key: str, text: str, spec: str, integer: bool) -> float | int:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        kind = "an integer >= 1" if integer else "a number > 0"
        example = SPEC_OPTIONS[key][2]
        raise DVAEInputError(
            f"option {key} in estimator spec {spec!r} must be {kind}, got {text!r}; "
            f"write e.g. {spec.split(':')[0]}:{key}={example}"
        )
    return value


def parse_spec(text: str) -> EstimatorSpec:
    """Parse one spec ``NAME[:KEY=VALUE...]``; raises :class:`DVAEInputError` with a one-line
    message naming the problem and the fix.

    Example:
        >>> parse_spec("nvil:particles=2").label
        'nvil:particles=2'
        >>> parse_spec("exact:tau=1")
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: option tau does not apply to estimator exact \
(spec 'exact:tau=1'); it applies to gumbel-softmax, st-gumbel, gumbel-rao, reinmax...
    """
    spec = str(text).strip()
    name, *options = [part.strip() for part in spec.split(":")]
    if not name:
        raise DVAEInputError(
            f"estimator spec {spec!r} has no estimator name; write NAME[:KEY=VALUE...], "
            "e.g. gumbel-softmax:tau=0.5"
        )
    name = name.lower()
    if name not in estimator_names():
        raise DVAEInputError(
            f"unknown estimator {name!r} in spec {spec!r}; choose one of "
            f"{', '.join(estimator_names())}"
        )
    values: dict[str, Any] = {}
    for option in options:
        key, sep, raw = (s.strip() for s in option.partition("="))
        key = _ALIASES.get(key.lower(), key.lower())
        if key not in SPEC_OPTIONS:
            raise DVAEInputError(
                f"unknown option {key or option!r} in estimator spec {spec!r}; options are "
                f"{', '.join(f'{k}=' for k in SPEC_OPTIONS)} (e.g. gumbel-softmax:tau=0.5)"
            )
        attr, applies, example = SPEC_OPTIONS[key]
        if not sep or not raw:
            raise DVAEInputError(
                f"option {key} in estimator spec {spec!r} needs a value; "
                f"write {name}:{key}={example}"
            )
        if name not in applies:
            raise DVAEInputError(
                f"option {key} does not apply to estimator {name} (spec {spec!r}); it applies "
                f"to {', '.join(applies)}"
            )
        if attr in values:
            raise DVAEInputError(f"option {key} is given twice in estimator spec {spec!r}")
        if key in _WORDS:
            if raw.lower() not in _WORDS[key]:
                raise DVAEInputError(
                    f"option {key} in estimator spec {spec!r} must be "
                    f"{' or '.join(_WORDS[key])}, got {raw!r}"
                )
            values[attr] = raw.lower()
        else:
            values[attr] = _number(key, raw, spec, integer=key in ("particles", "samples"))
    modes = get_estimator(name).kl_modes
    if values.get("kl") not in (None, *modes):
        raise DVAEInputError(
            f"estimator spec {spec!r}: {name}'s hard one-hot sample has zero density under the "
            f"relaxed (Concrete) prior; use {name}:kl={modes[0]}"
        )
    return EstimatorSpec(name, **values)


def parse_specs(text: str | list[str] | tuple[str, ...]) -> list[EstimatorSpec]:
    """Parse a comma-separated list of specs (or a list of spec strings); refuses duplicates.

    Example:
        >>> [s.label for s in parse_specs("exact, gumbel-softmax:tau=0.5")]
        ['exact', 'gumbel-softmax:tau=0.5']
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    if not [item for item in items if str(item).strip()]:
        raise DVAEInputError(
            "no estimators given; pass e.g. --estimators exact,gumbel-softmax:tau=0.5,nvil"
        )
    specs: list[EstimatorSpec] = []
    for item in items:
        if not str(item).strip():
            raise DVAEInputError(
                f"empty estimator spec in {text!r}; separate specs with single commas"
            )
        spec = parse_spec(item)
        if spec in specs:
            raise DVAEInputError(
                f"estimator spec {spec.label!r} is given twice; give each estimator once"
            )
        specs.append(spec)
    return specs
