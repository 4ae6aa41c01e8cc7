"""``pyro-dvae train`` reliability: bad input, resume, SIGKILL / SIGINT, untrusted checkpoints."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from _helpers import one_line_error
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_dvae.cli.main import main
from pyro_dvae.utils import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = ["--latent", "2x3", "--encoder-hidden", "16", "--iwae-samples", "10", "--no-progress"]
TIMING_KEYS = {"seconds", "train_seconds"}
# 28 steps per epoch on the digits; checkpoint after every step
RUN = [*TINY, "--epochs", "2", "--batch-size", "50", "--checkpoint-every", "1"]
TOTAL_STEPS = 56
# the CLI with every training step slowed down, so that a signal lands mid-run
SLOW_CHILD = """
import sys, time
from pyro_dvae.infer import TorchOptimSVI
real = TorchOptimSVI.compute_grads
def slow(self, *args, **kwargs):
    time.sleep(0.03)
    return real(self, *args, **kwargs)
TorchOptimSVI.compute_grads = slow
from pyro_dvae.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg", OMP_NUM_THREADS="1")


def _slow_child(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_CHILD, *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_step(proc: subprocess.Popen, ckpt: Path, step: int, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.communicate()
        if ckpt.is_file():
            with contextlib.suppress(Exception):  # a file being replaced right now
                if load_checkpoint(ckpt)["step"] >= step:
                    return
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no checkpoint at step {step} within {timeout} s")


def _metrics(run: Path) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in TIMING_KEYS}


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_sigint_then_sigkill_then_resume_equals_uninterrupted(tmp_path, capsys):
    # Ctrl-C: the step in progress finishes, a checkpoint is saved, exit 130 with one line
    proc = _slow_child("train", *RUN, "--out", "run", cwd=tmp_path)
    _wait_for_step(proc, tmp_path / "run" / "checkpoint.pt", 10)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    line = one_line_error(err, prefix="pyro-dvae: interrupted (SIGINT) at step ")
    step = int(re.search(r"at step (\d+) of 56", line).group(1))
    assert (
        f"saved {Path('run') / 'checkpoint.pt'}; continue with: pyro-dvae train --resume run"
        in line
    )
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == step >= 10

    # resume, then SIGKILL at whatever moment the run is at once it passed step 30
    proc = _slow_child("train", "--resume", "run", "--checkpoint-every", "1", cwd=tmp_path)
    _wait_for_step(proc, tmp_path / "run" / "checkpoint.pt", 30)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # loadable whatever the moment
    assert 30 <= ck["step"] < TOTAL_STEPS
    assert not (tmp_path / "run" / "metrics.json").exists()

    # resume to the end and run the uninterrupted reference, in this process on one thread
    # (like the subprocesses: the thread count may change float sums)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--resume", str(tmp_path / "run"), "--no-progress"]) == 0
        assert f"resumed {tmp_path / 'run'} from step {ck['step']}" in capsys.readouterr().out
        assert main(["train", *RUN, "--out", str(tmp_path / "ref")]) == 0
    finally:
        torch.set_num_threads(threads)
    assert not list((tmp_path / "run").glob(".*.tmp"))
    assert _metrics(tmp_path / "run") == _metrics(tmp_path / "ref")  # bitwise: all floats equal


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "args,message",
    [
        (["--latent", "0x5"], "latent spec needs at least 1 group, got 0; use e.g. '4x8'"),
        (["--latent", "4x1"], "needs at least 2 categories, got 1; use e.g. '4x8'"),
        (["--latent", "abc"], "cannot parse latent spec 'abc'; write 'NxK'"),
        (["--latent", "2000x1000"], "2000000 units, over the limit of 1048576; use a smaller"),
        (["--temperature", "0"], "temperature must be > 0, got 0.0; pass e.g. --temperature 1.0"),
        (["--temperature", "nan"], "temperature must be > 0, got nan"),
        (["--tau-min", "-1"], "tau-min must be > 0, got -1.0"),
        (["--lr", "0"], "learning rate must be > 0, got 0.0; pass e.g. --lr 1e-3"),
        (["--lr=-1e-3"], "learning rate must be > 0, got -0.001"),
        (["--seed", "4294967296"], "seed must be an integer in [0, 4294967295]"),
        (["--on-nan", "ignore"], "invalid choice: 'ignore'"),
        (["--max-nan-skips", "0"], "max nan skips must be an integer >= 1"),
        (["--checkpoint-every", "0"], "checkpoint every must be an integer >= 1"),
        (["--dropout", "1"], "dropout must be in [0, 1), got 1.0; pass e.g. --dropout 0.1"),
        (["--encoder-noise", "nan"], "encoder noise must be in [0, 1), got nan"),
        (["--resume", "{tmp}/nowhere"], "nowhere does not exist; pass the --out directory"),
        (
            ["--estimator", "exact", "--latent", "20x10"],
            "enumerates all 10^20 = 100000000000000000000 latent configurations of '20x10', "
            "over the limit of 1048576: a step on a batch of 100 evaluates the decoder 1.0e+22 "
            "times (at least 6.4e+25 flops, about",
        ),
        (["--estimator", "enumerate", "--latent", "30x2"], "258 GB held at once"),
        (
            ["--prior", "autoregressive", "--estimator", "gumbel-softmax"],
            "--prior autoregressive scores hard (one-hot or binary) codes; --estimator "
            "gumbel-softmax cannot train it; use one of st-gumbel, gumbel-rao",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    code = main(["train", *TINY, "--max-steps", "2", "--out", str(tmp_path / "run"), *args])
    captured = capsys.readouterr()
    assert code == 2
    assert message in one_line_error(captured.err)
    assert captured.out == ""
    assert not (tmp_path / "run").exists()


def _idx(arr: np.ndarray) -> bytes:
    """An IDX file: two zero bytes, type 0x08 (uint8), ndim, big-endian sizes, payload."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _fake_mnist(root: Path, height: int, width: int, n_train: int = 10_010, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, height, width)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (20, height, width)),
        "t10k-labels-idx1-ubyte": np.arange(20) % 10,
    }
    for name, arr in files.items():
        (root / name).write_bytes(_idx(np.asarray(arr)))
    return root


@pytest.mark.parametrize(
    "corrupt,message",
    [
        (lambda d: (d / "train-images-idx3-ubyte").write_bytes(b"GIF89a..."), "bad magic number"),
        (
            lambda d: (d / "t10k-images-idx3-ubyte").write_bytes(_idx(np.zeros((20, 2, 2)))[:-7]),
            "is truncated: header declares shape (20, 2, 2) (80 payload bytes) but only 73",
        ),
        (
            lambda d: (d / "t10k-labels-idx1-ubyte").write_bytes(_idx(np.zeros(3))),
            "(20 images) and",
        ),
        (lambda d: (d / "train-labels-idx1-ubyte").unlink(), "lacks train-labels-idx1-ubyte"),
    ],
    ids=["bad-magic", "truncated", "count-mismatch", "missing"],
)
def test_malformed_idx_files_exit_2(tmp_path, capsys, corrupt, message):
    data = _fake_mnist(tmp_path / "mnist", 2, 2)
    corrupt(data)
    args = ["--dataset", "mnist", "--data-dir", str(data), "--max-steps", "1"]
    assert main(["train", *TINY, *args, "--out", str(tmp_path / "run")]) == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_empty_idx_dataset_exits_2(tmp_path, capsys):
    data = _fake_mnist(tmp_path / "mnist", 2, 2, n_train=0)
    args = ["--dataset", "mnist", "--data-dir", str(data), "--max-steps", "1"]
    assert main(["train", *TINY, *args, "--out", str(tmp_path / "run")]) == 2
    assert "has 0 images, need more than 10000" in one_line_error(capsys.readouterr().err)


def test_resume_with_data_of_another_shape_exits_2(tmp_path, capsys):
    small = _fake_mnist(tmp_path / "a", 2, 2)
    run = tmp_path / "run"
    args = ["--dataset", "mnist", "--data-dir", str(small), "--max-steps", "1", "--iwae-samples"]
    assert main(["train", *TINY, *args, "2", "--out", str(run)]) == 0
    capsys.readouterr()
    wide = _fake_mnist(tmp_path / "b", 2, 3)
    assert main(["train", "--resume", str(run), "--data-dir", str(wide)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "trained on data with 4 features per datum, these data have 6" in line
    assert "resume with the dataset the run was trained on" in line
    other = _fake_mnist(tmp_path / "c", 2, 2, seed=1)
    assert main(["train", "--resume", str(run), "--data-dir", str(other)]) == 2
    assert "the data differ from those the run" in one_line_error(capsys.readouterr().err)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_resume_refuses_changed_options_and_other_out(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "2", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--lr", "0.1", "--latent", "2x3"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "--lr 0.1 (run: 0.001) differ; drop those options" in line and "latent" not in line
    assert main(["train", "--resume", str(run), "--out", str(tmp_path / "x")]) == 2
    assert "drop --out" in one_line_error(capsys.readouterr().err)
    assert main(["train", "--resume", str(run), "--no-progress", *TINY]) == 0  # same values: fine


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"model_state": {}, "config": {"lr": _Evil(marker)}}, run / "checkpoint.pt")
    assert main(["train", "--resume", str(run)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "contains executable objects and was refused" in line
    assert not marker.exists()


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_force_never_loses_the_previous_checkpoint_to_a_failed_start(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--max-steps", "2", "--out", str(run)]) == 0
    before = (run / "checkpoint.pt").read_bytes()
    for bad in (["--latent", "abc"], ["--dataset", "mnist", "--data-dir", str(tmp_path / "no")]):
        assert main(["train", *TINY, "--out", str(run), "--force", *bad]) == 2
    assert (run / "checkpoint.pt").read_bytes() == before
    assert main(["train", *TINY, "--max-steps", "2", "--out", str(run)]) == 2  # no --force
    assert "not empty" in capsys.readouterr().err
    assert main(["train", *TINY, "--max-steps", "3", "--out", str(run), "--force"]) == 0
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3


def test_on_nan_skip_via_cli(tmp_path, capsys, monkeypatch):
    import pyro_dvae.training.trainer as training  # where the Trainer validates its data

    real = training._validated

    def load(data, config):  # one NaN pixel in the data after validation
        data = real(data, config)
        data.train[:, 7] = torch.where(torch.arange(1397) == 5, math.nan, data.train[:, 7])
        return data

    monkeypatch.setattr(training, "_validated", load)
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "1", "--batch-size", "700", "--out", str(out)]
    assert main(args) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "the 'data batch' holds 1 NaN" in line and "--on-nan skip" in line
    assert main([*args, "--force", "--on-nan", "skip"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["skipped_steps"]) == 1 and metrics["steps"] == 2


# ----------------------------------------------------------------------------- property-based

_VALID_LATENT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$|^\s*(\d+)\s*[bB]\s*$")


class _Called(Exception):
    def __init__(self, config) -> None:
        self.config = config


def _expected_valid(latent: str, estimator: str, temperature: str, lr: str, epochs: str) -> bool:
    """An independent statement of what the CLI accepts for these five options."""
    m = _VALID_LATENT.match(latent)
    if m is None:
        return False
    if m.group(3) is not None:
        groups, categories = int(m.group(3)), 2
    else:
        groups, categories = int(m.group(1)), int(m.group(2))
    if groups < 1 or categories < 2 or groups * (categories if m.group(3) is None else 1) > 2**20:
        return False
    if estimator == "exact" and categories**groups > 2**20:
        return False
    units = groups * categories if m.group(3) is None else groups
    if 257 * units + 99_136 > 2**28:  # parameters of the default 256,128 MLPs on 64 pixels
        return False
    try:
        t, r, e = float(temperature), float(lr), int(epochs)
    except ValueError:
        return False
    return math.isfinite(t) and t > 0 and math.isfinite(r) and r > 0 and e >= 1


_number = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-5, 5).map(str),
    st.sampled_from(["", "1e-3", "-0", "0.0", "inf", "-inf", "nan", "1,0", "abc"]),
)
_latent = st.one_of(
    st.builds(lambda n, k: f"{n}x{k}", st.integers(-2, 40), st.integers(-2, 40)),
    st.builds(lambda n: f"{n}b", st.integers(-2, 30)),
    st.from_regex(r"\s?\d{1,12}\s?[xXbB]\s?\d{0,12}\s?", fullmatch=True),
    st.text(max_size=8).filter(lambda s: not s.startswith("-")),  # not an option flag
)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@settings(max_examples=150, deadline=None)
@given(
    latent=_latent,
    estimator=st.sampled_from(["gumbel-softmax", "exact"]),
    temperature=_number,
    lr=_number,
    epochs=st.one_of(st.integers(-3, 3).map(str), st.sampled_from(["1.5", "x", ""])),
)
def test_cli_accepts_exactly_the_valid_arguments(latent, estimator, temperature, lr, epochs):
    """Random option values: either training starts with a valid config, or exit 2 + one line."""
    argv = ["train", "--latent", latent, "--estimator", estimator, "--temperature", temperature]
    argv += ["--lr", lr, "--epochs", epochs, "--out", "/nonexistent-dir/run"]

    def fake_train(config, **kwargs):
        raise _Called(config)

    err = io.StringIO()
    with mock.patch("pyro_dvae.training.train", fake_train), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except _Called as called:
            code = 0
            called.config.validate()
            assert called.config.lr > 0 and called.config.temperature > 0
    if code == 2:
        one_line_error(err.getvalue())
    else:
        assert code == 0 and err.getvalue() == ""
    assert (code == 0) == _expected_valid(latent, estimator, temperature, lr, epochs), (
        err.getvalue()
    )
