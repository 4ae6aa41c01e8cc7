"""Estimator spec parsing: canonical labels, TrainConfig overrides, one-line errors."""

from __future__ import annotations

import pytest

from pyro_dvae.comparison import EstimatorSpec, parse_spec, parse_specs
from pyro_dvae.errors import DVAEInputError


@pytest.mark.parametrize(
    "text, label, overrides",
    [
        ("exact", "exact", {"estimator": "exact"}),
        (
            " Gumbel-Softmax : kl=Analytic : tau=0.5 ",
            "gumbel-softmax:tau=0.5:kl=analytic",
            {"estimator": "gumbel-softmax", "temperature": 0.5, "kl": "analytic"},
        ),
        ("gumbel-rao:samples=5:t=2", "gumbel-rao:tau=2:samples=5", None),
        ("vimco:particles=4:lr=3e-3", "vimco:particles=4:lr=0.003", None),
        ("nvil:lr=1e-2", "nvil:lr=0.01", {"estimator": "nvil", "lr": 0.01}),
        (
            "disarm:categorical=LOO:particles=2",
            "disarm:particles=2:categorical=loo",
            {"estimator": "disarm", "num_particles": 2, "disarm_categorical": "loo"},
        ),
    ],
)
def test_parse_valid_specs(text, label, overrides):
    spec = parse_spec(text)
    assert spec.label == label == str(spec)
    assert parse_spec(spec.label) == spec  # the label parses back to the same spec
    if overrides is not None:
        assert spec.train_overrides() == overrides


def test_overrides_map_to_train_config_fields():
    spec = parse_spec("gumbel-rao:tau=0.7:samples=3:particles=2")
    assert spec.relaxed and not parse_spec("nvil").relaxed
    assert spec.train_overrides() == {
        "estimator": "gumbel-rao",
        "temperature": 0.7,
        "num_particles": 2,
        "gumbel_rao_samples": 3,
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no estimators given"),
        ("exact,,nvil", "empty estimator spec"),
        ("exact,exact", "given twice"),
        ("foo", "unknown estimator 'foo'"),
        (":tau=1", "has no estimator name"),
        ("gumbel-softmax:beta=1", "unknown option 'beta'"),
        ("gumbel-softmax:tau", "needs a value; write gumbel-softmax:tau=0.5"),
        ("gumbel-softmax:tau=abc", "must be a number > 0, got 'abc'"),
        ("gumbel-softmax:tau=-1", "must be a number > 0"),
        ("gumbel-softmax:tau=nan", "must be a number > 0"),
        ("vimco:particles=2.5", "must be an integer >= 1"),
        ("exact:tau=1", "does not apply to estimator exact"),
        ("enumerate:particles=2", "does not apply to estimator enumerate"),
        ("gumbel-rao:kl=analytic", "does not apply to estimator gumbel-rao"),
        ("nvil:samples=3", "does not apply to estimator nvil"),
        ("gumbel-softmax:kl=exact", "must be analytic or relaxed"),
        ("disarm:categorical=tree", "must be stick-breaking or loo, got 'tree'"),
        ("rloo:categorical=loo", "does not apply to estimator rloo"),
        ("gumbel-softmax:tau=1:tau=2", "given twice"),
        ("st-gumbel:kl=relaxed", "use st-gumbel:kl=analytic"),
    ],
)
def test_bad_specs_give_one_line_errors(text, message):
    with pytest.raises(DVAEInputError, match=message) as info:
        parse_specs(text)
    assert "\n" not in str(info.value)


def test_parse_specs_accepts_lists_and_keeps_order():
    specs = parse_specs(["st-gumbel", "exact"])
    assert [s.label for s in specs] == ["st-gumbel", "exact"]
    assert specs[1] == EstimatorSpec("exact")
