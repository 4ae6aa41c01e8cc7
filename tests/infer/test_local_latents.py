"""Helpers shared by the per-datum estimators: the factorized-guide check."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer.local_latents import require_factorized_guide


def dependent_guide():
    a = pyro.sample("a", dist.Bernoulli(0.5))
    pyro.sample("b", dist.Bernoulli(0.2 + 0.5 * a))


def independent_guide():
    pyro.sample("a", dist.Bernoulli(0.5))
    pyro.sample("b", dist.Bernoulli(0.3))


def test_dependent_sites_are_refused_in_one_line():
    with pytest.raises(DVAEInputError, match=r"guide site 'b' depends on \['a'\]; REBAR") as e:
        require_factorized_guide(dependent_guide, (), {}, set(), "REBAR")
    assert "\n" not in str(e.value) and "use rloo or disarm" in str(e.value)


def test_independent_sites_pass_and_are_checked_once():
    checked: set = set()
    require_factorized_guide(independent_guide, (), {}, checked, "REBAR")
    assert len(checked) == 1
    require_factorized_guide(independent_guide, (), {}, checked, "REBAR")  # cached
    assert len(checked) == 1
