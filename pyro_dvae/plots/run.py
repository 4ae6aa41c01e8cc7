"""Write every figure of a training run (``pyro-dvae plot RUN_DIR``) or of a comparison."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ..errors import DVAEInputError, DVAEWriteError
from ..utils import fixed_seed
from ..utils.files import METRICS_NAME, lock_owner, read_history, read_metrics
from ._common import plt

__all__ = ["RUN_FIGURES", "plot_comparison_dir", "plot_run"]

#: file names written by :func:`plot_run` (``code_vs_label.png`` only when labels are known)
RUN_FIGURES = (
    "training_curve.png",
    "elbo_curves.png",
    "reconstructions.png",
    "prior_samples.png",
    "latent_traversals.png",
    "code_usage.png",
    "posterior_entropy.png",
    "code_vs_label.png",
)


def _targets(out: Path, names: list[str], overwrite: bool) -> dict[str, Path]:
    if out.exists() and not out.is_dir():
        raise DVAEInputError(f"--out {out} is a file, not a directory; pass a directory path")
    paths = {name: out / name for name in names}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise DVAEInputError(
            f"{existing[0]} already exists ({len(existing)} figure(s) would be replaced); pass "
            "--force to overwrite them or choose another --out"
        )
    return paths


def plot_run(
    run: Any,
    out_dir: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
    max_observations: int | None = None,
    seed: int = 0,
) -> dict[str, Path]:
    """Write all figures of a trained run as PNGs; returns ``{file name: path}``.

    ``run`` is a run directory or a :class:`~pyro_dvae.analysis.TrainedRun`; figures go to
    ``out_dir`` (default ``RUN_DIR/plots``). Latent-code figures use the test split (its first
    ``max_observations`` rows, if given). Existing files are only replaced with ``overwrite``.

    Example:
        >>> plot_run("runs/default")  # doctest: +SKIP
        {'training_curve.png': PosixPath('runs/default/plots/training_curve.png'), ...}
    """
    from ..analysis.latent_stats import posterior_probs
    from ..analysis.runs import TrainedRun, load_run
    from .images import plot_latent_traversals, plot_prior_samples, plot_reconstructions
    from .latents import plot_code_usage, plot_code_vs_label, plot_posterior_entropy
    from .training import plot_elbo_curves, plot_training_curve

    run = run if isinstance(run, TrainedRun) else load_run(run)
    out = Path(out_dir) if out_dir is not None else run.run_dir / "plots"
    data = run.load_data()
    x, labels = data.test, data.test_labels
    if max_observations is not None:
        x = x[:max_observations]
        labels = None if labels is None else labels[:max_observations]
    names = [n for n in RUN_FIGURES if n != "code_vs_label.png" or labels is not None]
    paths = _targets(out, names, overwrite)
    model, shape = run.model, data.image_shape
    with torch.no_grad(), fixed_seed(seed):
        recon = model.reconstruct(x[:10])
        samples = model.sample_x(32)
    probs = posterior_probs(model, x)
    makers = {
        "training_curve.png": lambda p: plot_training_curve(run.history, p),
        "elbo_curves.png": lambda p: plot_elbo_curves(run.history, run.metrics, p),
        "reconstructions.png": lambda p: plot_reconstructions(x[:10], recon, shape, p),
        "prior_samples.png": lambda p: plot_prior_samples(samples, shape, p),
        "latent_traversals.png": lambda p: plot_latent_traversals(model, x[0], shape, p),
        "code_usage.png": lambda p: plot_code_usage(probs, p),
        "posterior_entropy.png": lambda p: plot_posterior_entropy(probs, p),
        "code_vs_label.png": lambda p: plot_code_vs_label(probs, labels, p),
    }
    with lock_owner(out):  # a second writer into the run is refused
        out.mkdir(parents=True, exist_ok=True)
        for name, path in paths.items():
            try:
                plt.close(makers[name](path))
            except DVAEWriteError as e:
                raise DVAEWriteError(
                    f"could not write figure {path} ({e.reason}); the figures written before it "
                    f"and the run's checkpoint (step {run.step}) are kept",
                    path=e.path,
                    reason=e.reason,
                    what=e.what,
                ) from None
    return paths


def plot_comparison_dir(
    directory: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Learning curves of the runs in the sub-directories of ``directory`` (each with a
    ``metrics.json``), labelled by estimator; written to ``learning_curves.png``.

    Example:
        >>> plot_comparison_dir("runs/compare")  # doctest: +SKIP
        {'learning_curves.png': PosixPath('runs/compare/plots/learning_curves.png')}
    """
    from .training import plot_learning_curves

    root = Path(directory)
    curves: dict[str, dict] = {}
    for sub in sorted(p for p in root.iterdir() if (p / METRICS_NAME).is_file()):
        metrics = read_metrics(sub)
        label = str(metrics.get("estimator") or sub.name)
        curves[label if label not in curves else f"{label} ({sub.name})"] = read_history(
            sub, metrics
        )
    if not curves:
        raise DVAEInputError(
            f"no checkpoint.pt in {root} and no sub-directory with a metrics.json; pass a run "
            "directory written by 'pyro-dvae train'"
        )
    out = Path(out_dir) if out_dir is not None else root / "plots"
    paths = _targets(out, ["learning_curves.png"], overwrite)
    with lock_owner(out):
        out.mkdir(parents=True, exist_ok=True)
        plt.close(plot_learning_curves(curves, paths["learning_curves.png"]))
    return paths
