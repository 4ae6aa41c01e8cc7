"""Shared test fixtures: every test starts seeded, validated and with an empty param store."""

from __future__ import annotations

import pyro
import pytest


@pytest.fixture(autouse=True)
def _pyro_fresh_state():
    """Seed all RNGs, turn Pyro validation on and clear the param store before each test."""
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()
