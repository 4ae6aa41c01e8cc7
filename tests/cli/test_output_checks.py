"""Unwritable destinations are refused in one line before any work; a damaged checkpoint is
named in one short line (#19 item 3)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from _helpers import one_line_error

from pyro_dvae.cli.main import main

UNWRITABLE = Path("/proc/pyro-dvae-no-such-place")  # not creatable, even by root


@pytest.mark.slow  # uses the trained run fixture
def test_export_to_an_unwritable_file_fails_before_sampling(run_dir, capsys):
    start = time.perf_counter()
    code = main(["export", str(run_dir), "--out", "/proc/x.nc", "--num-samples", "50"])
    assert code == 2
    message = one_line_error(capsys.readouterr().err)
    assert "cannot write --out /proc/x.nc" in message
    assert time.perf_counter() - start < 5  # refused before the sampling, not after


@pytest.mark.slow  # uses the trained run fixture
def test_plot_into_an_unwritable_directory(run_dir, capsys):
    assert main(["plot", str(run_dir), "--out", str(UNWRITABLE / "plots")]) == 2
    assert "cannot write into --out" in one_line_error(capsys.readouterr().err)


def test_compare_into_an_unwritable_directory(capsys):
    code = main(["compare", "--estimators", "exact", "--steps", "2", "--out", str(UNWRITABLE)])
    assert code == 2
    assert "cannot write into --out" in one_line_error(capsys.readouterr().err)


@pytest.mark.slow  # uses the trained run fixture
def test_damaged_checkpoint_is_one_short_line(run_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(run_dir, bad)
    data = (bad / "checkpoint.pt").read_bytes()
    (bad / "checkpoint.pt").write_bytes(data[: len(data) // 3])  # cut off
    for argv in (
        ["export", str(bad), "--out", str(tmp_path / "x.nc")],
        ["train", "--resume", str(bad)],
    ):
        assert main(argv) == 2
        message = one_line_error(capsys.readouterr().err)
        assert "is damaged or incomplete" in message and "train again" in message
        assert len(message) < 300, message


def test_a_directory_holding_only_a_stale_lock_file_counts_as_empty(tmp_path):
    """A run that failed in a directory that existed before it leaves its (released) lock file:
    the next run may use the directory without --force; anything else in it still needs it."""
    from pyro_dvae.cli._options import check_out_dir
    from pyro_dvae.errors import DVAEInputError
    from pyro_dvae.utils.files import LOCK_NAME, run_lock

    out = tmp_path / "run"
    out.mkdir()
    with run_lock(out):  # a run that stops here (its lock file stays, unlocked)
        pass
    assert [p.name for p in out.iterdir()] == [LOCK_NAME]
    assert check_out_dir(out, force=False) == out
    (out / "metrics.json").write_text("{}")
    with pytest.raises(DVAEInputError, match="not empty; pass --force"):
        check_out_dir(out, force=False)
