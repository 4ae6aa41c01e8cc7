"""Every figure of a run or comparison directory (pyro_dvae.plots.run)."""

from __future__ import annotations

import pytest
from _plot_checks import is_png as _is_png

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.plots import (
    plot_comparison_dir,
    plot_run,
)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_plot_run_writes_every_figure_and_never_overwrites(tmp_path, run_dir):
    out = tmp_path / "figs"
    paths = plot_run(run_dir, out, max_observations=30)
    assert set(paths) == {
        "training_curve.png",
        "elbo_curves.png",
        "reconstructions.png",
        "prior_samples.png",
        "latent_traversals.png",
        "code_usage.png",
        "posterior_entropy.png",
        "code_vs_label.png",
    }
    assert all(_is_png(p) for p in paths.values())
    before = (out / "code_usage.png").read_bytes()
    with pytest.raises(DVAEInputError, match="already exists.*--force"):
        plot_run(run_dir, out)
    assert (out / "code_usage.png").read_bytes() == before


def test_plot_comparison_dir(tmp_path, run_dir):
    import shutil

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        shutil.copy(run_dir / "metrics.json", tmp_path / name / "metrics.json")
        shutil.copy(run_dir / "history.jsonl", tmp_path / name / "history.jsonl")
    paths = plot_comparison_dir(tmp_path)
    assert _is_png(paths["learning_curves.png"])
    with pytest.raises(DVAEInputError, match="no checkpoint.pt"):
        plot_comparison_dir(tmp_path / "a")
