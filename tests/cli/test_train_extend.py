"""``pyro-dvae train --resume RUN --epochs N`` extends a finished run (issue 19 item 6)."""

from __future__ import annotations

import json

import pytest
from _helpers import one_line_error

from pyro_dvae.cli.main import main

# 1397 digits / batch 300: 5 steps per epoch
SMALL = ["--latent", "2x4", "--encoder-hidden", "32", "--batch-size", "300", "--iwae-samples", "20"]
QUIET = ["--no-progress"]


def _metrics(run) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    history = (run / m["history_file"]).read_text() if "history_file" in m else None
    drop = ("seconds", "train_seconds")
    return {k: v for k, v in m.items() if k not in drop} | {"history": history}


@pytest.mark.slow  # seconds of training: make test-fast skips it
def test_resume_with_more_epochs_extends_the_run(tmp_path, capsys):
    run, ref = tmp_path / "run", tmp_path / "ref"
    assert main(["train", *SMALL, *QUIET, "--epochs", "1", "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run), "--epochs", "2", *QUIET]) == 0
    assert f"resumed {run} from step 5 to step 10 (epochs=2)" in capsys.readouterr().out
    assert main(["train", *SMALL, *QUIET, "--epochs", "2", "--out", str(ref)]) == 0
    assert _metrics(run) == _metrics(ref)  # the same as an uninterrupted 2-epoch run


def test_resume_cannot_change_a_cosine_schedule(tmp_path, capsys):
    run = tmp_path / "run"
    args = [*SMALL, *QUIET, "--lr-schedule", "cosine", "--max-steps", "2"]
    assert main(["train", *args, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--max-steps", "4", *QUIET]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "from 2 to 4 steps" in line and "--lr-schedule cosine" in line


def test_resume_still_refuses_other_settings(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *SMALL, *QUIET, "--max-steps", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "3", "--lr", "0.01", *QUIET]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "--lr 0.01 (run: 0.001) differ" in line and "--epochs" not in line
