"""A tiny comparison, run once and shared by the comparison tests (about 2 s)."""

from __future__ import annotations

import copy

import pytest

from pyro_dvae.comparison import CompareConfig, run_comparison
from pyro_dvae.training import TrainConfig

TINY_SPECS = "exact,gumbel-softmax:tau=0.5,score-function-baseline"


def _tiny_config(**kw) -> CompareConfig:
    """2x3 latent, 8 steps, 2 seeds, 4-sample diagnostics at steps 4 and 8."""
    base = TrainConfig(latent="2x3", encoder_hidden=(16,), iwae_samples=20, batch_size=50)
    settings = dict(
        base=base,
        steps=8,
        seeds=(0, 1),
        eval_every=2,
        diag_at=(0.5,),
        diag_samples=4,
        diag_batch=20,
        diag_temperatures=(0.5, 2.0),
    )
    settings.update(kw)
    return CompareConfig(**settings)


@pytest.fixture(scope="session")
def _tiny_result_once():
    return run_comparison(TINY_SPECS, _tiny_config(), progress=False)


@pytest.fixture
def tiny_result(_tiny_result_once):
    """A fresh copy of the raw (not yet summarized) tiny comparison."""
    return copy.deepcopy(_tiny_result_once)


@pytest.fixture
def tiny_config():
    """Factory of tiny :class:`CompareConfig` objects; keyword arguments override fields."""
    return _tiny_config
