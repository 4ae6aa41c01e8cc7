"""``pyro-dvae train --nproc 2`` (torchrun, gloo on loopback) matches the 1-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pyro_dvae.cli.main import main
from pyro_dvae.utils.files import read_history

TINY = [
    "--latent", "2x3", "--encoder-hidden", "16", "--epochs", "2", "--batch-size", "200",
    "--iwae-samples", "10", "--no-progress",
]  # fmt: skip


def _train(out, *extra: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    run = subprocess.run(
        [sys.executable, "-m", "pyro_dvae", "train", *TINY, "--out", str(out), *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(json.loads((out / "metrics.json").read_text()), history=read_history(out))


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
@pytest.mark.parametrize("estimator", ["exact"])
def test_two_processes_match_one(tmp_path, estimator):
    one = _train(tmp_path / "one", "--estimator", estimator)
    two = _train(tmp_path / "two", "--estimator", estimator, "--nproc", "2")
    assert two["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert one["distributed"]["world_size"] == 1
    # Deterministic estimator, same global batches: only float summation order differs
    # (two shards, then an all-reduce), so the numbers agree to 1e-5 relative.
    for key in ("test_nelbo", "test_nll_iwae", "test_nll_exact", "valid_nelbo"):
        assert two[key] == pytest.approx(one[key], rel=1e-5), key
    assert two["history"]["loss"] == pytest.approx(one["history"]["loss"], rel=1e-5)


def test_nproc_must_be_positive(tmp_path, capsys):
    assert main(["train", *TINY, "--nproc", "0", "--out", str(tmp_path / "r")]) == 2
    assert "--nproc must be >= 1" in capsys.readouterr().err


def test_bad_input_is_refused_before_launching(tmp_path, capsys):
    code = main(["train", *TINY, "--nproc", "2", "--lr", "-1", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "learning rate must be > 0" in capsys.readouterr().err
