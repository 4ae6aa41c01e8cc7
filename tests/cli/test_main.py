from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _helpers import one_line_error

from pyro_dvae.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--latent",
    "2x4",
    "--encoder-hidden",
    "32",
    "--max-steps",
    "4",
    "--iwae-samples",
    "20",
    "--no-progress",
]
METRIC_KEYS = {
    "test_nelbo",
    "test_kl",
    "active_groups",
    "test_nll_iwae",
    "test_nll_exact",
    "true_test_nll",
    "seconds",
    "steps",
    "config",
    "versions",
    "history_file",
}


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_train_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "test -ELBO" in stdout and "nats/datum" in stdout and str(out) in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["steps"] == 4 and metrics["config"]["latent"] == "2x4"
    assert "history" not in metrics  # one line a step, in a file of its own
    assert len((out / metrics["history_file"]).read_text().splitlines()) == 4
    for name in ("checkpoint.pt", "training_curve.png", "reconstructions.png", "prior_samples.png"):
        assert (out / name).is_file(), name


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_same_seed_identical_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        assert main(["train", *TINY, "--seed", "3", "--out", str(tmp_path / name)]) == 0
        m = json.loads((tmp_path / name / "metrics.json").read_text())
        runs.append({k: v for k, v in m.items() if k not in ("seconds", "train_seconds")})
    assert runs[0] == runs[1]


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_refuses_non_empty_out_without_force(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["train", *TINY, "--out", str(out)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "not empty" in line and "--force" in line
    assert not (out / "metrics.json").exists()
    assert main(["train", *TINY, "--out", str(out), "--force"]) == 0
    assert (out / "metrics.json").is_file() and (out / "keep.txt").is_file()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--dataset", "mnist"], "--dataset mnist needs --data-dir"),
        (["--dataset", "mnist", "--data-dir", "{tmp}/nowhere"], "nowhere"),
        (["--latent", "0x5"], "at least 1 group"),
        (["--latent", "4x1"], "at least 2 categories"),
        (["--latent", "abc"], "cannot parse latent spec 'abc'"),
        (["--temperature", "-1"], "temperature must be > 0, got -1.0"),
        (["--estimator", "exact", "--latent", "20x10"], "10^20 = 100000000000000000000"),
        (["--estimator", "enumerate", "--latent", "20x10"], "over the limit of 1048576"),
        (["--estimator", "st-gumbel", "--kl", "relaxed"], "use --kl analytic"),
        (["--lr", "0"], "learning rate must be > 0"),
        (["--epochs", "0"], "epochs must be an integer >= 1"),
        (["--batch-size", "-5"], "batch size must be an integer >= 1"),
        (["--dataset", "cifar"], "invalid choice: 'cifar'"),
        (["--epochs", "ten"], "invalid int value: 'ten'"),
        (["--encoder-hidden", "a,b"], "invalid hidden sizes"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = main(["train", *TINY, "--out", str(tmp_path / "run"), *args])
    captured = capsys.readouterr()
    assert code == 2
    assert message in one_line_error(captured.err)
    assert captured.out == ""
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_no_command(capsys):
    assert main([]) == 2
    assert "required" in one_line_error(capsys.readouterr().err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_unavailable(tmp_path, capsys):
    assert main(["train", *TINY, "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "CUDA is not available" in one_line_error(capsys.readouterr().err)


def test_help_exits_0(capsys):
    assert main(["train", "--help"]) == 0
    assert "--estimator" in capsys.readouterr().out


def test_non_finite_loss_exits_1(tmp_path, capsys, monkeypatch):
    from pyro_dvae.infer import TorchOptimSVI

    real = TorchOptimSVI.compute_grads

    def poisoned(self, x):  # a real NaN in a decoder weight before step 2
        if self.optimizer is not None:
            with torch.no_grad():
                self.model.__self__.decoder[0].weight.view(-1)[3] = float("nan")
        return real(self, x)

    monkeypatch.setattr(TorchOptimSVI, "compute_grads", poisoned)
    assert main(["train", *TINY, "--out", str(tmp_path / "run")]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "training loss became nan at step 2 (epoch 1)" in line
    assert "'discrete_vae.decoder.0.weight' holds 1 NaN" in line
    assert "last good checkpoint is kept in" in line


def test_parser_defaults_match_train_config():
    from pyro_dvae.training import TrainConfig

    args = build_parser().parse_args(["train"])
    d = TrainConfig()
    for name in ("dataset", "latent", "estimator", "kl", "temperature", "epochs", "lr", "seed"):
        assert getattr(args, name) == getattr(d, name), name


def _run_module(*args: str, cwd: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg", **extra_env)
    return subprocess.run(
        [sys.executable, "-m", "pyro_dvae", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_python_dash_m_end_to_end(tmp_path):
    proc = _run_module("train", *TINY, "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert "Traceback" not in proc.stderr


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_python_dash_m_bad_input(tmp_path):
    proc = _run_module("train", "--latent", "abc", cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot parse latent spec 'abc'" in one_line_error(proc.stderr)
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
@pytest.mark.parametrize("status", [0, 2])
def test_torchrun_rank_exits_with_its_status_and_flushed_output(tmp_path, status):
    """Under torchrun (WORLD_SIZE set; 1 here, so no process group) ``python -m pyro_dvae``
    ends through os._exit: the exit status and everything printed to the pipes must survive."""
    args = ["train", *TINY, "--out", "out"] if status == 0 else ["train", "--latent", "abc"]
    torchrun = {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}
    # stdout to a pipe is block-buffered (PYTHONUNBUFFERED="" is off): os._exit would drop it
    proc = _run_module(*args, cwd=tmp_path, PYTHONUNBUFFERED="", **torchrun)
    assert proc.returncode == status, proc.stderr
    if status == 0:
        assert proc.stdout.splitlines()[-1].startswith("wrote out/ (metrics.json")
        assert (tmp_path / "out" / "metrics.json").is_file()
    else:
        assert "cannot parse latent spec 'abc'" in one_line_error(proc.stderr)
