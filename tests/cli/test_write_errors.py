"""A write that fails (no space, read-only, quota) at any of the package's write sites: exit 2,
one line naming what could not be written, where, and what is kept; the previous files stay
as they were and no temporary file is left."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from _helpers import one_line_error

from pyro_dvae.cli.main import main
from pyro_dvae.utils import load_checkpoint

#: 6 steps, checkpoints at the start and at steps 2, 4 and 6 (twice: every 2 steps, epoch end)
SHORT = ["--latent", "2x4", "--encoder-hidden", "16", "--iwae-samples", "10", "--no-progress"]
SHORT += ["--max-steps", "6", "--checkpoint-every", "2"]
ENOSPC = os.strerror(errno.ENOSPC)


@pytest.fixture
def fail_write(monkeypatch):
    """``fail_write(name, at=1, how="replace")``: the ``at``-th write of a file called ``name``
    raises ``OSError(ENOSPC)``, in ``os.replace`` or when its temporary file is opened."""

    def install(name: str, at: int = 1, how: str = "replace") -> None:
        calls = {"n": 0}

        def hit(target: str) -> bool:
            if target != name:
                return False
            calls["n"] += 1
            return calls["n"] == at

        if how == "replace":
            real = os.replace

            def replace(src, dst, *args, **kwargs):
                if hit(Path(dst).name):
                    raise OSError(errno.ENOSPC, ENOSPC)
                return real(src, dst, *args, **kwargs)

            monkeypatch.setattr(os, "replace", replace)
        else:
            real_mkstemp = tempfile.mkstemp

            def mkstemp(*args, prefix=None, **kwargs):
                if prefix and prefix.startswith(".") and hit(prefix[1:].rsplit(".", 1)[0]):
                    raise OSError(errno.ENOSPC, ENOSPC)
                return real_mkstemp(*args, prefix=prefix, **kwargs)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    return install


def _no_temporary_files(directory: Path) -> None:
    assert not [p.name for p in directory.rglob("*.tmp")]


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


@pytest.mark.slow  # seconds of training: make test-fast skips it
@pytest.mark.parametrize(
    "name,at,how,kept_step",
    [
        ("checkpoint.pt", 1, "replace", None),  # the first checkpoint of the run
        ("checkpoint.pt", 3, "replace", 2),
        ("checkpoint.pt", 3, "open", 2),
        ("training_curve.png", 1, "replace", 6),
        ("history.jsonl", 1, "open", 6),
        ("metrics.json", 1, "replace", 6),
    ],
)
def test_train_write_error(tmp_path, capsys, fail_write, name, at, how, kept_step):
    out = tmp_path / "run"
    fail_write(name, at, how)
    assert main(["train", *SHORT, "--out", str(out)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("pyro-dvae: error: could not write ")
    assert f"{out / name} ({ENOSPC})" in line
    if kept_step is None:
        assert line.endswith("no checkpoint of this run was written")
        assert not (out / "checkpoint.pt").exists()
        return
    assert f"the last good checkpoint (step {kept_step}) is kept in {out / 'checkpoint.pt'}" in line
    assert line.endswith(f"then continue with --resume {out}")
    assert load_checkpoint(out / "checkpoint.pt")["step"] == kept_step
    assert not (out / "metrics.json").exists()  # a run is finished once metrics.json is written
    assert (out / "history.jsonl").exists() == (name == "metrics.json")
    _no_temporary_files(out)
    if name == "checkpoint.pt":  # the kept checkpoint resumes
        capsys.readouterr()
        assert main(["train", "--resume", str(out), "--no-progress"]) == 0
        assert json.loads((out / "metrics.json").read_text())["steps"] == 6


@pytest.mark.slow  # seconds of training: make test-fast skips it
def test_forced_run_that_cannot_write_keeps_the_finished_run(run_dir, tmp_path, capsys, fail_write):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    before = _snapshot(out)
    fail_write("checkpoint.pt")
    assert main(["train", *SHORT, "--out", str(out), "--force"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"could not write checkpoint {out / 'checkpoint.pt'} ({ENOSPC})" in line
    assert f"the previous run's checkpoint {out / 'checkpoint.pt'} (step 5) is kept" in line
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if k != ".pyro-dvae.lock"} == {
        k: v for k, v in before.items() if k != ".pyro-dvae.lock"
    }
    _no_temporary_files(out)


@pytest.mark.slow  # seconds of sampling and plotting: make test-fast skips it
def test_plot_write_error(run_dir, tmp_path, capsys, fail_write):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    assert main(["plot", str(out)]) == 0
    before = _snapshot(out / "plots")
    capsys.readouterr()
    fail_write("code_usage.png")
    assert main(["plot", str(out), "--force"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"could not write figure {out / 'plots' / 'code_usage.png'} ({ENOSPC})" in line
    assert "the run's checkpoint (step 5) are kept" in line
    assert _snapshot(out / "plots")["code_usage.png"] == before["code_usage.png"]
    _no_temporary_files(out)


@pytest.mark.slow  # seconds of sampling: make test-fast skips it
def test_export_write_error(run_dir, tmp_path, capsys, fail_write):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    nc = out / "posterior.nc"
    small = ["--num-observations", "4", "--num-samples", "2", "--num-chains", "1"]
    assert main(["export", str(out), "--out", str(nc), *small]) == 0
    before = nc.read_bytes()
    capsys.readouterr()
    fail_write("posterior.nc")
    assert main(["export", str(out), "--out", str(nc), *small, "--force", "--seed", "1"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"could not write netCDF file {nc} ({ENOSPC})" in line
    assert "the run's checkpoint (step 5) are kept" in line
    assert nc.read_bytes() == before
    _no_temporary_files(out)
