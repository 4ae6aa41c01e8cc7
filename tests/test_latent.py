"""Tests for :class:`pyro_dvae.latent.LatentSpec` (parsing, validation, sizes)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.latent import LatentSpec


@pytest.mark.parametrize(
    "text, groups, categories, kind, num_configurations, dim",
    [
        ("4x8", 4, 8, "categorical", 8**4, 32),
        ("1x2", 1, 2, "categorical", 2, 2),
        (" 3 X 5 ", 3, 5, "categorical", 125, 15),
        ("200b", 200, 2, "bernoulli", 2**200, 200),
        ("7B", 7, 2, "bernoulli", 128, 7),
    ],
)
def test_parse_valid(text, groups, categories, kind, num_configurations, dim):
    spec = LatentSpec.parse(text)
    assert (spec.groups, spec.categories, spec.kind) == (groups, categories, kind)
    # exact Python int, not a float (2**200 has no exact float64 representation issue here)
    assert spec.num_configurations == num_configurations
    assert isinstance(spec.num_configurations, int)
    assert spec.dim == dim
    assert spec.log2_configurations == pytest.approx(groups * math.log2(categories))
    assert LatentSpec.parse(str(spec)) == spec
    assert LatentSpec.parse(spec) is spec


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("0x5", "at least 1 group"),
        ("4x1", "at least 2 categories"),
        ("0b", "at least 1 group"),
        ("abc", "cannot parse latent spec 'abc'"),
        ("", "cannot parse latent spec ''"),
        ("4x", "cannot parse"),
        ("-2x3", "cannot parse"),
        ("2.5x3", "cannot parse"),
    ],
)
def test_parse_invalid(text, fragment):
    with pytest.raises(DVAEInputError) as info:
        LatentSpec.parse(text)
    assert fragment in str(info.value)


def test_invalid_constructor_arguments():
    with pytest.raises(DVAEInputError, match="latent kind"):
        LatentSpec(2, 2, "gaussian")
    with pytest.raises(DVAEInputError, match="exactly 2 values"):
        LatentSpec(2, 3, "bernoulli")


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 60), k=st.integers(2, 40), bern=st.booleans())
def test_parse_property(n, k, bern):
    text = f"{n}b" if bern else f"{n}x{k}"
    spec = LatentSpec.parse(text)
    k_eff = 2 if bern else k
    assert spec.groups == n
    assert spec.categories == k_eff
    assert spec.kind == ("bernoulli" if bern else "categorical")
    assert spec.num_configurations == k_eff**n
    assert spec.dim == (n if bern else n * k)
    assert str(spec) == text
    assert LatentSpec.parse(str(spec)) == spec
    assert math.isclose(spec.log2_configurations, math.log2(spec.num_configurations))
