"""A run directory has one writer: a second ``pyro-dvae train`` (``--force``, ``--resume``) or
``plot`` into a live run is refused in one line naming the holder, and a run killed with
``kill -9`` leaves nothing that blocks the next one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pyro_dvae.utils import load_checkpoint
from pyro_dvae.utils.files import LOCK_NAME

REPO = Path(__file__).resolve().parents[2]
TINY = ["--latent", "2x4", "--encoder-hidden", "16", "--iwae-samples", "10", "--no-progress"]


def _start(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "pyro_dvae", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _long_run(out: Path) -> subprocess.Popen:
    """A training run that lasts minutes, once it holds the lock of ``out`` and has written its
    first checkpoint."""
    proc = _start("train", *TINY, "--epochs", "1000", "--threads", "1", "--out", str(out))
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            holder = json.loads((out / LOCK_NAME).read_text())
        except (OSError, ValueError):
            holder = {}
        if holder.get("pid") == proc.pid and (out / "checkpoint.pt").is_file():
            return proc
        assert time.monotonic() < deadline, "the run did not start"
        time.sleep(0.2)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow  # subprocesses that train: .ci/run runs it, make test-fast skips it
def test_second_writer_into_a_live_run_is_refused(tmp_path):
    out = tmp_path / "same"
    first = _long_run(out)
    try:
        others = [
            _start("train", *TINY, "--max-steps", "3", "--out", str(out), "--force"),
            _start("train", "--resume", str(out), "--no-progress"),
            _start("plot", str(out), "--out", str(out / "figures")),
        ]
        for proc in others:
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 2, err
            line = _one_line(err)
            assert line.startswith(f"pyro-dvae: error: run directory {out} is in use by pid ")
            assert f"pid {first.pid} on " in line and "pyro-dvae train" in line
            assert "wait for it to finish" in line
        assert first.poll() is None  # the first run goes on, alone
        assert not (out / "metrics.json").exists()
        assert not (out / "figures" / "code_usage.png").exists()
    finally:
        first.kill()
        first.communicate()
    assert load_checkpoint(out / "checkpoint.pt")["config"]["epochs"] == 1000  # the first run's


@pytest.mark.slow  # subprocesses that train: .ci/run runs it, make test-fast skips it
def test_lock_of_a_killed_run_does_not_block(tmp_path):
    out = tmp_path / "run"
    first = _long_run(out)
    first.send_signal(signal.SIGKILL)  # kill -9: no handler, no cleanup
    first.communicate()
    assert (out / LOCK_NAME).is_file()  # left behind, but the OS released its lock
    proc = _start("train", *TINY, "--max-steps", "3", "--out", str(out), "--force")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 3
