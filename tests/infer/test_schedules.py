"""Temperature schedules: constant and Jang et al.'s stepwise exponential decay."""

from __future__ import annotations

import math

import pytest

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import ConstantTemperature, ExponentialDecayTemperature, TemperatureSchedule


@pytest.mark.parametrize("tau", [0.1, 1.0, 3])
def test_constant(tau):
    s = ConstantTemperature(tau)
    assert isinstance(s, TemperatureSchedule)
    assert [s(t) for t in (0, 1, 999, 10**7)] == [float(tau)] * 4
    assert "ConstantTemperature" in repr(s)


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
def test_constant_invalid(bad):
    with pytest.raises(DVAEInputError, match="temperature"):
        ConstantTemperature(bad)


def jang(step, tau0, rate, tau_min, every):
    """Reference: tau = max(tau_min, tau0 * exp(-rate * t)), t = every * floor(step / every)."""
    t = (step // every) * every
    return max(tau_min, tau0 * math.exp(-rate * t))


@pytest.mark.parametrize(
    "tau0, rate, tau_min, every",
    [(1.0, 1e-3, 0.5, 100), (2.0, 3e-5, 0.5, 1000), (1.0, 0.0, 0.3, 1), (5.0, 0.01, 0.1, 7)],
)
def test_exponential_matches_formula(tau0, rate, tau_min, every):
    s = ExponentialDecayTemperature(tau0=tau0, rate=rate, tau_min=tau_min, every=every)
    for step in [0, 1, every - 1, every, every + 1, 3 * every - 1, 3 * every, 12345, 10**6]:
        assert s(step) == pytest.approx(jang(step, tau0, rate, tau_min, every), rel=1e-12)


def test_exponential_flooring_and_clamping():
    s = ExponentialDecayTemperature(tau0=1.0, rate=1e-3, tau_min=0.5, every=100)
    # constant within each block of `every` steps
    assert s(0) == s(50) == s(99) == 1.0
    assert s(100) == s(199) == pytest.approx(math.exp(-0.1))
    assert s(200) == pytest.approx(math.exp(-0.2))
    # monotone non-increasing, clamped at tau_min
    values = [s(t) for t in range(0, 2000, 37)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert s(10**6) == 0.5
    assert min(values) >= 0.5
    # the clamp engages exactly at the first block with tau0 * exp(-rate t) < tau_min
    first = next(t for t in range(0, 2000, 100) if math.exp(-1e-3 * t) < 0.5)
    assert s(first - 1) > 0.5 and s(first) == 0.5


def test_exponential_defaults_follow_jang():
    s = ExponentialDecayTemperature()
    assert (s.tau0, s.rate, s.tau_min, s.every) == (1.0, 3e-5, 0.5, 1000)
    assert s(999) == 1.0 and s(1000) == pytest.approx(math.exp(-0.03))
    assert "ExponentialDecayTemperature" in repr(s)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(tau0=0.0), "initial temperature"),
        (dict(tau0=-1.0), "initial temperature"),
        (dict(tau_min=0.0), "minimum temperature"),
        (dict(tau_min=float("nan")), "minimum temperature"),
        (dict(rate=-1e-3), "anneal rate"),
        (dict(rate=float("inf")), "anneal rate"),
        (dict(every=0), "anneal interval"),
        (dict(every=-5), "anneal interval"),
    ],
)
def test_exponential_invalid(kwargs, fragment):
    with pytest.raises(DVAEInputError, match=fragment):
        ExponentialDecayTemperature(**kwargs)


def test_base_schedule_is_abstract():
    with pytest.raises(NotImplementedError):
        TemperatureSchedule()(0)
