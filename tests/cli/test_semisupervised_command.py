"""``pyro-dvae semisupervised``: a short run writes its metrics; bad input is one line, exit 2."""

from __future__ import annotations

import json

from _helpers import one_line_error

from pyro_dvae.cli.main import main


def test_short_run_writes_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["semisupervised", "--epochs", "1", "--labels", "50", "--hidden", "32"]
    argv += ["--z-dim", "4", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["epochs_done"] == 1
    assert "test accuracy" in capsys.readouterr().out


def test_bad_labels_and_existing_out_are_one_line_errors(tmp_path, capsys):
    assert main(["semisupervised", "--labels", "7", "--out", str(tmp_path / "a")]) == 2
    assert "multiple of the 10 classes" in one_line_error(capsys.readouterr().err)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text("{}")
    assert main(["semisupervised", "--out", str(tmp_path / "b")]) == 2
    assert "--force" in one_line_error(capsys.readouterr().err)
    assert (tmp_path / "b" / "metrics.json").read_text() == "{}"  # nothing overwritten
