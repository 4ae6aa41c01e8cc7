"""A comparison whose budget leaves every estimator at the collapsed start says so (issue 19)."""

from __future__ import annotations

import pytest

from pyro_dvae.comparison import format_markdown, summarize


def _note(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("- note: no estimator")]


def test_collapsed_nll_of_the_digits(tiny_result):
    # independent pixel frequencies of the training set on the test set: where a model that
    # ignores z (a collapsed posterior) ends, ~27.3 nats on the digits
    assert tiny_result["dataset"]["collapsed_nll"] == pytest.approx(27.29, abs=0.01)


def test_every_estimator_at_the_collapsed_start_is_said(tiny_result):
    result = summarize(tiny_result)  # 8 steps: nobody got below the collapsed NLL
    assert result["target"]["auto"] and result["collapse"]["stuck"]
    (note,) = _note(format_markdown(result))
    assert "27.29" in note and "collapsed start" in note and "--steps" in note
    # the note is in the part of the report that `pyro-dvae compare` prints
    assert note in "\n\n".join(format_markdown(result).split("\n\n")[:3])


def test_no_note_once_an_estimator_moved(tiny_result):
    tiny_result["estimators"][0]["runs"][0]["test_nll_exact"] = 20.0
    tiny_result["estimators"][0]["runs"][1]["test_nll_exact"] = 20.0
    result = summarize(tiny_result)
    assert not result["collapse"]["stuck"]
    assert _note(format_markdown(result)) == []


def test_no_note_without_a_collapsed_reference(tiny_result):
    tiny_result["dataset"]["collapsed_nll"] = None  # e.g. real-valued data
    assert _note(format_markdown(summarize(tiny_result))) == []
