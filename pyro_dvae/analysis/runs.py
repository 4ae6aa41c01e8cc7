"""Rebuild a trained :class:`~pyro_dvae.models.DiscreteVAE` from a ``pyro-dvae train`` run.

A run directory holds ``checkpoint.pt`` (weights, config; written after every epoch) and, once
training has finished, ``metrics.json`` (config and test metrics) and ``history.jsonl`` (the
training history, one step a line; runs written before it kept the history in
``metrics.json``, which is still read).
The checkpoint is read with :func:`pyro_dvae.utils.load_checkpoint`, which refuses files that
would need to execute code to load.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import DVAEInputError
from ..models import DiscreteVAE
from ..utils import load_checkpoint
from ..utils.files import METRICS_NAME, read_history, read_metrics

if TYPE_CHECKING:
    from ..training import RunMetrics

__all__ = ["CHECKPOINT_FILE", "METRICS_FILE", "TrainedRun", "load_run", "run_directory"]

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = METRICS_NAME


@dataclass
class TrainedRun:
    """A trained model with the config, metrics and training history of its run.

    :ivar run_dir: the run directory.
    :ivar model: the :class:`~pyro_dvae.models.DiscreteVAE`, in eval mode, on CPU.
    :ivar config: the training config (a :class:`~pyro_dvae.training.TrainConfig` as a dict).
    :ivar metrics: the :class:`~pyro_dvae.training.RunMetrics` of ``metrics.json`` (empty if
        training did not finish).
    :ivar step: the training step the checkpoint was written at.
    :ivar saved_history: the contents of ``history.jsonl`` (see :attr:`history`).

    Example:
        >>> run = load_run("runs/default")  # doctest: +SKIP
        >>> run.model.latent, run.metrics["test_nll_exact"]  # doctest: +SKIP
        (LatentSpec('4x8'), 23.63)
    """

    run_dir: Path
    model: DiscreteVAE
    config: dict[str, Any]
    metrics: RunMetrics = field(default_factory=dict)  # type: ignore[assignment]
    step: int = 0
    saved_history: dict[str, list] = field(default_factory=dict, repr=False)

    @property
    def history(self) -> dict[str, list[float]]:
        """Per-step ``loss`` / ``tau`` and per-epoch ``valid_step`` / ``valid_nelbo`` (from
        ``history.jsonl``, or from ``metrics.json`` for runs written before it existed)."""
        return dict(self.saved_history or self.metrics.get("history") or {})

    def load_data(self) -> Any:
        """The :class:`~pyro_dvae.data.BinaryDataset` the run was trained on.

        Raises :class:`~pyro_dvae.errors.DVAEInputError` if the run used a custom dataset
        (``train(dataset=...)``), which cannot be reloaded by name.
        """
        from ..data import load_dataset

        name = self.config.get("dataset", "digits")
        trained_on = self.metrics.get("dataset", name)
        if trained_on != name:
            raise DVAEInputError(
                f"run {self.run_dir} was trained on a custom dataset {trained_on!r}; pass that "
                "data to to_inference_data(...) yourself"
            )
        return load_dataset(name, self.config.get("data_dir"))


def run_directory(run_dir: str | os.PathLike) -> Path:
    """Check that ``run_dir`` is a run directory with a checkpoint and return it as a Path.

    Example:
        >>> run_directory("/nonexistent/run")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: run directory /nonexistent/run does not exist; ...
    """
    path = Path(run_dir)
    if not path.exists():
        raise DVAEInputError(
            f"run directory {path} does not exist; pass the --out directory of 'pyro-dvae train'"
        )
    if not path.is_dir():
        raise DVAEInputError(
            f"{path} is a file, not a run directory; pass the --out directory of 'pyro-dvae train'"
        )
    if not (path / CHECKPOINT_FILE).is_file():
        raise DVAEInputError(
            f"no {CHECKPOINT_FILE} in {path}; train a model there first with "
            f"'pyro-dvae train --out {path}'"
        )
    return path


def _data_dim(state: dict[str, torch.Tensor], metrics: RunMetrics) -> int:
    if isinstance(metrics.get("data_dim"), int):
        return metrics["data_dim"]
    first = state.get("encoder.0.weight")
    if first is None or first.dim() != 2:
        raise DVAEInputError(
            "checkpoint holds no DiscreteVAE encoder weights ('encoder.0.weight'); pass the "
            "checkpoint.pt written by 'pyro-dvae train'"
        )
    return int(first.shape[1])


def load_run(run_dir: str | os.PathLike) -> TrainedRun:
    """Rebuild the trained model of a ``pyro-dvae train`` run directory (on CPU, eval mode).

    Example:
        >>> from pyro_dvae.training import TrainConfig, train
        >>> import tempfile
        >>> out = tempfile.mkdtemp()
        >>> cfg = TrainConfig(latent="2x4", max_steps=2, iwae_samples=5, encoder_hidden=(16,))
        >>> _ = train(cfg, out_dir=out, progress=False)  # doctest: +SKIP
        >>> load_run(out).model.latent  # doctest: +SKIP
        LatentSpec(groups=2, categories=4, kind='categorical')
    """
    path = run_directory(run_dir)
    checkpoint = load_checkpoint(path / CHECKPOINT_FILE, map_location="cpu")
    metrics = read_metrics(path)
    config = dict(checkpoint.get("config") or metrics.get("config") or {})
    if not config.get("latent"):
        raise DVAEInputError(
            f"{path / CHECKPOINT_FILE} holds no training config (latent spec); pass a run "
            "directory written by 'pyro-dvae train'"
        )
    state = checkpoint["model_state"]
    decoder_hidden = config.get("decoder_hidden")
    try:
        model = DiscreteVAE(
            _data_dim(state, metrics),
            config["latent"],
            encoder_hidden=tuple(config.get("encoder_hidden") or (256, 128)),
            decoder_hidden=None if decoder_hidden is None else tuple(decoder_hidden),
            prior=config.get("prior", "uniform"),
            likelihood=config.get("likelihood", "bernoulli"),
            dropout=float(config.get("dropout", 0.0)),  # layout of the Sequential's indices
            encoder_noise=float(config.get("encoder_noise", 0.0)),
        )
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DVAEInputError(
            f"checkpoint in {path} does not match its config ({msg}); re-run training"
        ) from None
    model.eval()
    history = read_history(path, metrics)
    return TrainedRun(path, model, config, metrics, int(checkpoint.get("step", 0)), history)
