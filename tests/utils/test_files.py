"""Atomic writes, one-line write errors, the history and metrics files and the run-directory
lock."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pyro_dvae.errors import DVAEInputError, DVAEWriteError
from pyro_dvae.utils import files
from pyro_dvae.utils.files import (
    LOCK_NAME,
    METRICS_NAME,
    atomic_path,
    check_not_locked,
    history_rows,
    read_history,
    read_metrics,
    run_lock,
    write_history,
    write_json,
    write_text,
)

REPO = Path(__file__).resolve().parents[2]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _only_the_file(directory: Path, name: str) -> None:
    assert sorted(p.name for p in directory.iterdir()) == [name]  # no temporary file left


@pytest.mark.parametrize("where", ["replace", "open"])
def test_failed_write_keeps_the_previous_file_and_says_so_in_one_line(tmp_path, monkeypatch, where):
    path = write_json(tmp_path / "metrics.json", {"steps": 1}, what="metrics")
    if where == "replace":
        monkeypatch.setattr(os, "replace", _no_space)
    else:  # the temporary file cannot even be created
        monkeypatch.setattr(tempfile, "mkstemp", _no_space)
    with pytest.raises(DVAEWriteError) as info:
        write_json(path, {"steps": 2}, what="metrics")
    message = str(info.value)
    assert message == (
        f"could not write metrics {path} (No space left on device); the previous file, if any, "
        "is kept"
    )
    assert isinstance(info.value, DVAEInputError) and info.value.path == path
    assert json.loads(path.read_text()) == {"steps": 1}
    _only_the_file(tmp_path, "metrics.json")


def test_write_error_in_the_writer_itself(tmp_path):
    def fail(f):
        f.write(b"half")
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(DVAEWriteError, match=r"a\.txt \(Disk quota exceeded\)"):
        files.atomic_write(tmp_path / "a.txt", fail, what="note")
    assert (tmp_path / "a.txt").read_text() == "old"
    _only_the_file(tmp_path, "a.txt")


def test_atomic_path_for_writers_that_need_a_name(tmp_path, monkeypatch):
    target = tmp_path / "run.nc"
    target.write_bytes(b"old")
    monkeypatch.setattr(os, "replace", _no_space)
    with pytest.raises(DVAEWriteError, match="could not write netCDF file"):
        with atomic_path(target, what="netCDF file") as tmp:
            tmp.write_bytes(b"new")
    assert target.read_bytes() == b"old"
    _only_the_file(tmp_path, "run.nc")


def test_written_files_have_ordinary_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = write_text(tmp_path / "a.txt", "x")
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_history_file_round_trip(tmp_path):
    history = {
        "loss": [3.0, None, 2.0, 1.5],
        "tau": [1.0, 0.9, 0.8, 0.7],
        "valid_step": [2, 4],
        "valid_nelbo": [2.5, float("nan")],
    }
    write_history(tmp_path / "history.jsonl", history)
    lines = (tmp_path / "history.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[1]) == {
        "step": 2,
        "loss": None,
        "tau": 0.9,
        "valid_nelbo": 2.5,
    }
    back = read_history(tmp_path)
    assert back == dict(history, valid_nelbo=[2.5, None])


def test_history_rows_keep_validation_off_the_loss_steps():
    rows = history_rows({"loss": [1.0], "tau": [1.0], "valid_step": [1, 1], "valid_nelbo": [2, 3]})
    assert rows == [
        {"step": 1, "loss": 1.0, "tau": 1.0, "valid_nelbo": 2},
        {"step": 1, "valid_nelbo": 3},
    ]


def test_read_history_of_an_old_run_and_of_a_bad_file(tmp_path):
    old = {"history": {"loss": [1.0], "tau": [1.0], "valid_step": [1], "valid_nelbo": [2.0]}}
    assert read_history(tmp_path, old) == old["history"]
    assert read_history(tmp_path, {}) == {}
    (tmp_path / "history.jsonl").write_text("{not json\n")
    with pytest.raises(DVAEInputError, match="not a readable training history"):
        read_history(tmp_path, old)


def test_read_metrics_of_a_finished_an_unfinished_and_a_broken_run(tmp_path):
    write_json(tmp_path / METRICS_NAME, {"test_nelbo": 25.0, "steps": 3}, what="metrics")
    assert read_metrics(tmp_path) == {"test_nelbo": 25.0, "steps": 3}
    assert read_metrics(tmp_path / "unfinished") == {}
    (tmp_path / METRICS_NAME).write_text("{not json")
    with pytest.raises(DVAEInputError, match="not readable JSON .JSONDecodeError.; re-run"):
        read_metrics(tmp_path)
    (tmp_path / METRICS_NAME).write_text("[1, 2]")
    with pytest.raises(DVAEInputError, match="does not hold a JSON object"):
        read_metrics(tmp_path)


def test_run_lock_is_reentrant_and_removes_the_directory_it_made(tmp_path):
    run = tmp_path / "run"
    with run_lock(run, create=True, command="pyro-dvae test"):
        with run_lock(run):  # the same process again: fine
            check_not_locked(run)
        holder = json.loads((run / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "pyro-dvae test"
    assert not run.exists()
    run.mkdir()
    (run / "keep.txt").write_text("x")
    with run_lock(run, create=True):
        pass
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME, "keep.txt"]


def _hold_lock(directory: Path) -> subprocess.Popen:
    code = (
        "import sys, time; from pyro_dvae.utils.files import run_lock\n"
        "with run_lock(sys.argv[1], command='pyro-dvae train --out x'):\n"
        "    print('locked', flush=True); time.sleep(300)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(directory)],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_lock_held_by_another_process_then_killed(tmp_path):
    proc = _hold_lock(tmp_path)
    try:
        with pytest.raises(DVAEInputError) as info:
            with run_lock(tmp_path):
                pass
        message = str(info.value)
        assert message.startswith(f"run directory {tmp_path} is in use by pid {proc.pid} on ")
        assert "(pyro-dvae train --out x, since " in message and "\n" not in message
        with pytest.raises(DVAEInputError, match="is in use by pid"):
            check_not_locked(tmp_path)
    finally:
        proc.send_signal(signal.SIGKILL)  # kill -9: the OS drops its lock
        proc.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            with run_lock(tmp_path):
                break
        except DVAEInputError:
            assert time.monotonic() < deadline, "the lock of a killed process was not released"
            time.sleep(0.1)
    check_not_locked(tmp_path)
