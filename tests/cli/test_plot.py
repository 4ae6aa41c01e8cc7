"""``pyro-dvae plot``: writes every figure of a run; never overwrites without --force."""

from __future__ import annotations

import pytest
from _helpers import one_line_error

from pyro_dvae.cli.main import main

FIGURES = {
    "training_curve.png",
    "elbo_curves.png",
    "reconstructions.png",
    "prior_samples.png",
    "latent_traversals.png",
    "code_usage.png",
    "posterior_entropy.png",
    "code_vs_label.png",
}


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_plot_writes_all_figures(run_dir, tmp_path, capsys):
    out = tmp_path / "figs"
    assert main(["plot", str(run_dir), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    assert {p.name for p in out.iterdir()} == FIGURES
    assert all(p.stat().st_size > 1000 for p in out.iterdir())


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_plot_default_out_and_force(run_dir, capsys):
    assert main(["plot", str(run_dir)]) == 0
    plots = run_dir / "plots"
    assert {p.name for p in plots.iterdir()} == FIGURES
    before = {p.name: p.stat().st_mtime_ns for p in plots.iterdir()}
    assert main(["plot", str(run_dir)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "already exists" in line and "--force" in line
    assert before == {p.name: p.stat().st_mtime_ns for p in plots.iterdir()}
    assert main(["plot", str(run_dir), "--force"]) == 0


def test_plot_comparison_directory(run_dir, tmp_path):
    import shutil

    for name in ("exact", "nvil"):
        (tmp_path / name).mkdir()
        shutil.copy(run_dir / "metrics.json", tmp_path / name)
        shutil.copy(run_dir / "history.jsonl", tmp_path / name)
    assert main(["plot", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "learning_curves.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "where,message",
    [
        ("missing", "does not exist; pass the --out directory of 'pyro-dvae train'"),
        ("empty", "no checkpoint.pt in"),
        ("file", "is a file, not a run directory"),
    ],
)
def test_bad_input_one_line(tmp_path, capsys, where, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    assert main(["plot", str(tmp_path / where)]) == 2
    assert message in one_line_error(capsys.readouterr().err)
