"""``pyro-dvae compare`` end to end on a tiny configuration, and its one-line errors."""

from __future__ import annotations

import csv
import json

import pytest

from pyro_dvae.cli.main import build_parser, main

TINY = [
    "--latent", "2x3", "--encoder-hidden", "16", "--batch-size", "50", "--steps", "6",
    "--seeds", "2", "--eval-every", "3", "--iwae-samples", "10", "--diag-samples", "3",
    "--diag-batch", "10", "--diag-at", "0.5", "--diag-temperatures", "0.5,2", "--no-progress",
]  # fmt: skip
SPECS = "exact,st-gumbel,gumbel-softmax:tau=0.5:kl=relaxed,nvil"


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_compare_end_to_end(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", *TINY, "--estimators", SPECS, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "| estimator |" in stdout and f"wrote {out}/" in stdout
    specs = SPECS.split(",")
    table = (out / "results.md").read_text().split("\n\n")[2].splitlines()[2:]
    assert [row.split("|")[1].strip().strip("`") for row in table] == specs
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["estimator"] for r in rows] == specs
    assert all(r["steps_mean"] == "6.0" and r["runs"] == "2" for r in rows)
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["seeds"] == [0, 1] and data["config"]["steps"] == 6
    assert [len(e["runs"]) for e in data["estimators"]] == [2] * 4
    for name in ("runs.csv", "curves.csv", "gradients.csv", "learning_curves.png"):
        assert (out / name).is_file(), name
    assert (out / "gradient_vs_temperature.png").is_file()


def test_defaults_and_seed_lists():
    args = build_parser().parse_args(["compare", "--seeds", "0,5,7"])
    assert args.seeds == (0, 5, 7) and args.latent == "4x8" and args.dataset == "digits"
    assert build_parser().parse_args(["compare", "--seeds", "3"]).seeds == (0, 1, 2)
    assert "exact" in args.estimators.split(",")
    assert args.threads == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--estimators", "foo"], "unknown estimator 'foo'"),
        (["--estimators", "exact:tau=1"], "option tau does not apply to estimator exact"),
        (["--estimators", "exact,,nvil"], "empty estimator spec"),
        (["--seeds", "x"], "invalid --seeds 'x'"),
        (["--seeds", "0"], "--seeds must be >= 1"),
        (["--steps", "0"], "steps must be an integer >= 1"),
        (["--time-budget", "-3"], "time budget must be > 0"),
        (["--diag-temperatures", "a,b"], "invalid list of numbers"),
        (["--latent", "0x5"], "latent"),
        (["--kl", "relaxed", "--estimators", "st-gumbel"], "estimator 'st-gumbel'"),
        (["--latent", "12x8", "--estimators", "exact"], "estimator 'exact'"),
        (["--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_bad_input_exits_2_with_one_line(argv, message, capsys, tmp_path):
    out = tmp_path / "never"
    assert main(["compare", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyro-dvae: error: "), err
    assert message in err[0]
    assert not out.exists()


def test_refuses_non_empty_out(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["compare", *TINY, "--estimators", "exact", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_compare_over_two_processes_matches_one(tmp_path):
    """Runs dealt out to 2 torchrun ranks give the numbers of the 1-process comparison."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    results = []
    for nproc in ("1", "2"):
        out = tmp_path / f"n{nproc}"
        args = ["compare", *TINY, "--estimators", "exact,gumbel-softmax", "--nproc", nproc]
        run = subprocess.run(
            [sys.executable, "-m", "pyro_dvae", *args, "--out", str(out), "--no-progress"],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        results.append(json.loads((out / "results.json").read_text()))
    for one, two in zip(results[0]["estimators"], results[1]["estimators"]):
        assert one["spec"] == two["spec"]
        for r1, r2 in zip(one["runs"], two["runs"]):
            assert r1["seed"] == r2["seed"]
            for key in ("test_nll_exact", "test_nelbo", "test_nll_iwae"):
                assert r1[key] == r2[key], (one["spec"], r1["seed"], key)
