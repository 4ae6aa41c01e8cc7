"""The estimator registry: one declaration per estimator, read by build_elbo, TrainConfig, compare
specs, the command line and the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pyro.infer import Trace_ELBO

import pyro_dvae.infer as infer
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import (
    ESTIMATORS,
    GumbelSoftmaxELBO,
    build_elbo,
    estimator_names,
    get_estimator,
    register_estimator,
)
from pyro_dvae.infer.registry import _REGISTRY

ROOT = Path(__file__).resolve().parents[2]


def test_every_estimator_builds_with_its_own_defaults():
    """``build_elbo(name)`` works for every name (``st-gumbel`` used to raise: default kl)."""
    for name in ESTIMATORS:
        info = get_estimator(name)
        elbo = build_elbo(name)
        assert isinstance(elbo, info.elbo)
        if info.takes("kl"):
            assert elbo.kl == "analytic"


def test_one_default_kl_everywhere():
    from pyro_dvae.training import TrainConfig

    assert GumbelSoftmaxELBO().kl == "analytic"
    assert GumbelSoftmaxELBO(straight_through=True).straight_through  # as documented
    assert build_elbo("gumbel-softmax").kl == TrainConfig().kl == "analytic"


def test_kl_modes_are_enforced_in_api_terms():
    for name in estimator_names(relaxed=True, hard=True):
        with pytest.raises(DVAEInputError, match="kl='analytic'") as e:
            build_elbo(name, kl="relaxed")
        assert "--" not in str(e.value)
    assert build_elbo("gumbel-softmax", kl="relaxed").kl == "relaxed"
    assert build_elbo("nvil", kl="relaxed").baseline == "neural"  # kl does not apply: ignored


def test_capabilities():
    assert estimator_names(relaxed=True) == (
        "gumbel-softmax",
        "st-gumbel",
        "gumbel-rao",
        "reinmax",
        "gst",
    )
    assert estimator_names(exact=True) == ("enumerate", "exact")
    assert estimator_names(hard=False) == ("gumbel-softmax",)
    assert "autoregressive" not in get_estimator("gumbel-softmax").priors
    unmixed = ["rebar", "relax", "unordered-set"]
    assert [n for n in ESTIMATORS if not get_estimator(n).mixed] == unmixed
    assert estimator_names(option="kl") == ("gumbel-softmax", "st-gumbel")


def test_registering_is_one_declaration_read_everywhere():
    from pyro_dvae.comparison.spec import parse_spec

    register_estimator("test-trace", Trace_ELBO, options=("num_particles",), summary="test")
    try:
        assert type(build_elbo("test-trace", num_particles=3)) is Trace_ELBO
        assert build_elbo("test-trace", num_particles=3).num_particles == 3
        assert "test-trace" in estimator_names(option="num_particles")
        assert parse_spec("test-trace").estimator == "test-trace"
        with pytest.raises(DVAEInputError, match="already registered"):
            register_estimator("test-trace", Trace_ELBO)
    finally:
        _REGISTRY.pop("test-trace")
    with pytest.raises(DVAEInputError, match="unknown estimator 'test-trace'"):
        build_elbo("test-trace")
    with pytest.raises(DVAEInputError, match="unknown option"):
        register_estimator("bad", Trace_ELBO, options=("bogus",))


def test_cli_choices_come_from_the_registry():
    from pyro_dvae.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["train"]
    estimator = next(a for a in sub._actions if a.dest == "estimator")
    assert tuple(estimator.choices) == ESTIMATORS


@pytest.mark.parametrize("doc", ["README.md", "docs/guide/estimators.rst"])
def test_docs_table_lists_every_estimator_and_its_calls_work(doc):
    """Every registered name is in the table; every ``Class(...)`` written there runs as is."""
    text = (ROOT / doc).read_text()
    for name in ESTIMATORS:
        assert f"`{name}`" in text, f"{doc} does not list estimator {name}"
    calls = re.findall(r"``?([A-Z]\w*ELBO\([^`]*\))``?", text)
    assert calls, doc
    for call in calls:
        eval(call, vars(infer))  # noqa: S307 - the documentation's own examples
