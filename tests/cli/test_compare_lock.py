"""``pyro-dvae compare`` into a directory another process writes is refused before it trains."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from _helpers import one_line_error

from pyro_dvae.cli.main import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a subprocess: .ci/run runs it, make test-fast skips it
def test_compare_into_a_locked_directory(tmp_path, capsys):
    code = (
        "import sys, time; from pyro_dvae.utils.files import run_lock\n"
        "with run_lock(sys.argv[1], command='pyro-dvae compare --out x'):\n"
        "    print('locked', flush=True); time.sleep(300)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["compare", "--estimators", "exact", "--steps", "2", "--no-progress"]
        assert main([*args, "--out", str(tmp_path), "--force"]) == 2
        line = one_line_error(capsys.readouterr().err)
        assert f"run directory {tmp_path} is in use by pid {holder.pid} on " in line
        assert "pyro-dvae compare --out x" in line
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "results.json").exists()
