"""``pyro-dvae export``: writes a netCDF file that ArviZ reads back; bad input is one line."""

from __future__ import annotations

import pytest
from _helpers import one_line_error

from pyro_dvae.analysis import load_inference_data
from pyro_dvae.cli.main import main

SMALL = ["--num-observations", "6", "--num-samples", "3", "--num-chains", "2"]


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_export_writes_netcdf(run_dir, tmp_path, capsys):
    out = tmp_path / "run.nc"
    assert main(["export", str(run_dir), "--out", str(out), *SMALL]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    idata = load_inference_data(out)
    assert dict(idata.posterior["z"].sizes) == {
        "chain": 2,
        "draw": 3,
        "observation": 6,
        "latent_group": 2,
    }
    assert dict(idata.prior["z"].sizes) == dict(idata.posterior["z"].sizes)
    assert dict(idata.constant_data["z_probs"].sizes) == {
        "observation": 6,
        "latent_group": 2,
        "category": 4,
    }
    assert idata.posterior.attrs["split"] == "test" and "label" in idata.constant_data
    assert idata.training["loss"].sizes["step"] == 5


def test_export_refuses_existing_file_without_force(run_dir, tmp_path, capsys):
    out = tmp_path / "run.nc"
    out.write_text("keep me")
    assert main(["export", str(run_dir), "--out", str(out), *SMALL]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "already exists" in line and "--force" in line
    assert out.read_text() == "keep me"
    assert main(["export", str(run_dir), "--out", str(out), *SMALL, "--force"]) == 0
    assert load_inference_data(out).posterior["z"].sizes["draw"] == 3


@pytest.mark.parametrize(
    "where,extra,message",
    [
        ("missing", [], "does not exist; pass the --out directory of 'pyro-dvae train'"),
        ("empty", [], "no checkpoint.pt in"),
        ("run", ["--out", "{tmp}/nodir/x.nc"], "does not exist; create it first"),
        ("run", ["--num-samples", "0"], "must be an integer >= 1"),
        ("run", ["--split", "dev"], "invalid choice: 'dev'"),
    ],
)
def test_bad_input_one_line(run_dir, tmp_path, capsys, where, extra, message):
    (tmp_path / "empty").mkdir()
    target = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "run": run_dir}[where]
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    args = ["export", str(target), "--out", str(tmp_path / "x.nc"), *extra]
    assert main(args) == 2
    assert message in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "x.nc").exists()
