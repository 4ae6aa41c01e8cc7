"""Summaries over seeds: mean/SD, time to target, gradient tables."""

from __future__ import annotations

import math

import pytest

from pyro_dvae.comparison import gradient_table, mean_sd, summarize, time_to_target


def test_mean_sd_skips_missing_values():
    assert mean_sd([2.0, 4.0, None, math.nan]) == {
        "mean": 3.0,
        "sd": pytest.approx(math.sqrt(2.0)),
        "min": 2.0,
        "max": 4.0,
        "n": 2,
    }
    assert mean_sd([5.0])["sd"] is None
    assert mean_sd([None])["mean"] is None


def test_time_to_target_first_crossing():
    curve = {"step": [10, 20, 30], "seconds": [1.0, 2.0, 3.0], "nll_exact": [30.0, 24.0, 26.0]}
    assert time_to_target(curve, "nll_exact", 25.0) == (20, 2.0)
    assert time_to_target(curve, "nll_exact", 24.0) == (20, 2.0)  # at or below
    assert time_to_target(curve, "nll_exact", 10.0) == (None, None)


def test_gradient_table_relative_numbers():
    rows = [
        {"step": 5, "temperature": t, "at_training_temperature": t == 1.0, "group": "encoder",
         "bias": b, "bias_se": 1.0, "cosine": 0.5, "variance": 16.0, "mse": 1.0, "exact_norm": 2.0}
        for t, b in ((1.0, 1.0), (0.5, 3.0))
    ]  # fmt: skip
    own = gradient_table([{"gradients": rows}])
    assert len(own) == 1 and own[0]["temperature"] == 1.0
    assert own[0]["rel_bias"]["mean"] == 0.5 and own[0]["rel_sd"]["mean"] == 2.0
    assert own[0]["bias_noise"]["mean"] == 1.0
    sweep = gradient_table([{"gradients": rows}], own_temperature_only=False)
    assert [r["temperature"] for r in sweep] == [0.5, 1.0]


def test_summarize_tiny_comparison(tiny_result):
    result = summarize(tiny_result)
    specs = [e["spec"] for e in result["estimators"]]
    assert specs == ["exact", "gumbel-softmax:tau=0.5", "score-function-baseline"]
    target = result["target"]
    assert target["auto"] and target["metric"] == "test_nll_exact"
    finals = sorted(e["summary"]["test_nll_exact"]["mean"] for e in result["estimators"])
    assert target["value"] == pytest.approx(finals[1])  # median of three
    for est in result["estimators"]:
        s = est["summary"]
        assert s["runs"] == 2 and s["test_nll_exact"]["n"] == 2
        assert s["steps"]["mean"] == 8
        assert 0 <= s["reached"] <= 2
        assert s["test_nll_exact"]["sd"] is not None
        assert {row["group"] for row in est["gradients"]} == {"encoder", "decoder"}
        assert {row["step"] for row in est["gradients"]} == {4, 8}
        assert bool(est["temperature_sweep"]) == est["relaxed"]
    sweep = result["estimators"][1]["temperature_sweep"]
    assert sorted({r["temperature"] for r in sweep}) == [0.5, 2.0]
    fixed = summarize(tiny_result, target=1e9)  # every run reaches a huge target at once
    assert all(e["summary"]["reached"] == 2 for e in fixed["estimators"])
    assert all(e["summary"]["steps_to_target"]["mean"] == 2 for e in fixed["estimators"])
