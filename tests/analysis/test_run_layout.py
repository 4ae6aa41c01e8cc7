"""The run-directory layout: ``metrics.json`` (the summary) beside ``history.jsonl`` (one line a
step), and runs written before the history had its own file (history inside metrics.json)."""

from __future__ import annotations

import json

import pytest

from pyro_dvae.analysis import load_run
from pyro_dvae.training import TrainConfig, train


@pytest.mark.slow  # seconds of training: make test-fast skips it
def test_history_file_and_old_layout(tmp_path):
    cfg = TrainConfig(latent="2x3", encoder_hidden=(8,), max_steps=3, iwae_samples=5)
    returned = train(cfg, out_dir=tmp_path, progress=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert "history" not in metrics and metrics["history_file"] == "history.jsonl"
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1]["valid_nelbo"] is not None
    new = load_run(tmp_path)
    assert new.history == json.loads(json.dumps(returned["history"]))
    # a run written before history.jsonl: the history inside metrics.json is still read
    (tmp_path / "history.jsonl").unlink()
    metrics.pop("history_file")
    (tmp_path / "metrics.json").write_text(json.dumps(dict(metrics, history=new.history)))
    assert load_run(tmp_path).history == new.history
