"""Shared test fixtures: every test starts seeded, validated and with an empty param store."""

from __future__ import annotations

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _pyro_fresh_state():
    """Seed all RNGs, turn Pyro validation on and clear the param store before each test."""
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="module")
def one_thread():
    """Run a module single-threaded: on tiny tensors intra-op threads only add OpenMP
    synchronization (ms per op on a loaded 2-core machine for float64 kernels). Use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
