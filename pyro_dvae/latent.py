"""Latent-space specifications: ``N x K`` categorical groups or ``N`` Bernoulli units."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import DVAEInputError

__all__ = ["LatentSpec"]

_CATEGORICAL = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
_BERNOULLI = re.compile(r"^\s*(\d+)\s*[bB]\s*$")


@dataclass(frozen=True)
class LatentSpec:
    """A discrete latent space.

    ``kind="categorical"``: ``groups`` independent one-hot categorical variables with
    ``categories`` classes each (``K^N`` joint configurations). ``kind="bernoulli"``: ``groups``
    binary units (``2^N`` configurations).

    Example:
        >>> spec = LatentSpec.parse("4x8")
        >>> spec.groups, spec.categories, spec.num_configurations
        (4, 8, 4096)
        >>> LatentSpec.parse("200b").kind
        'bernoulli'
    """

    groups: int
    categories: int
    kind: str = "categorical"

    def __post_init__(self) -> None:
        if self.kind not in ("categorical", "bernoulli"):
            raise DVAEInputError(
                f"latent kind must be 'categorical' or 'bernoulli', got {self.kind!r}"
            )
        if self.groups < 1:
            raise DVAEInputError(
                f"latent spec needs at least 1 group, got {self.groups}; use e.g. '4x8' or '20b'"
            )
        if self.kind == "categorical" and self.categories < 2:
            raise DVAEInputError(
                f"a categorical latent needs at least 2 categories, got {self.categories}; "
                "use e.g. '4x8' (4 groups of 8 categories)"
            )
        if self.kind == "bernoulli" and self.categories != 2:
            raise DVAEInputError("a Bernoulli latent has exactly 2 values per unit")

    @classmethod
    def parse(cls, text: str | LatentSpec) -> LatentSpec:
        """Parse ``"NxK"`` (N categorical groups of K classes) or ``"Nb"`` (N Bernoulli units)."""
        if isinstance(text, LatentSpec):
            return text
        m = _CATEGORICAL.match(str(text))
        if m:
            return cls(int(m.group(1)), int(m.group(2)), "categorical")
        m = _BERNOULLI.match(str(text))
        if m:
            return cls(int(m.group(1)), 2, "bernoulli")
        raise DVAEInputError(
            f"cannot parse latent spec {text!r}; write 'NxK' for N categorical groups of K "
            "classes (e.g. '4x8') or 'Nb' for N Bernoulli units (e.g. '20b')"
        )

    @property
    def num_configurations(self) -> int:
        """Number of joint configurations, ``K^N`` (an exact Python int)."""
        return self.categories**self.groups

    @property
    def dim(self) -> int:
        """Width of the flattened latent fed to a decoder (``N*K`` or ``N``)."""
        return self.groups * self.categories if self.kind == "categorical" else self.groups

    @property
    def log2_configurations(self) -> float:
        return self.groups * math.log2(self.categories)

    def __str__(self) -> str:
        if self.kind == "bernoulli":
            return f"{self.groups}b"
        return f"{self.groups}x{self.categories}"
