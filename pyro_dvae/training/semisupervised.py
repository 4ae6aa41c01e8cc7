"""Training the semi-supervised M2 model on a few labels: configuration, loop and metrics.

Each step takes one unlabelled batch (``y`` a latent: summed exactly by ``enumerate``, relaxed by
``gumbel-softmax`` / ``st-gumbel``) and, every ``labelled_every`` steps, one batch drawn from the
labelled images (``y`` observed, plus the classification term ``alpha * log q(y | x)`` in the
model). The labelled ELBO is weighted by labels / training images, so that, as in Kingma et al.'s
objective, every image counts once per epoch.

Example:
    >>> cfg = SemiSupervisedConfig(labels=20, epochs=1, hidden=(16,), z_dim=4)
    >>> metrics = train_semisupervised(cfg, progress=False)  # doctest: +SKIP
    >>> 0.0 <= metrics["test_accuracy"] <= 1.0  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyro
import torch
from torch import nn

from ..data import BinaryDataset, load_dataset, random_translate
from ..errors import DVAEInputError
from ..infer import EnumeratedELBO, GumbelSoftmaxELBO, TorchOptimSVI
from ..models import SemiSupervisedVAE
from ..utils.checkpoint import save_checkpoint
from ..utils.options import hidden_sizes, option
from ..utils.progress import progress_bar

__all__ = [
    "SEMISUPERVISED_ESTIMATORS",
    "SemiSupervisedConfig",
    "confusion_matrix",
    "pick_labelled",
    "train_semisupervised",
]

#: how an unlabelled batch's class is handled: summed exactly, or relaxed
SEMISUPERVISED_ESTIMATORS = ("enumerate", "gumbel-softmax", "st-gumbel")


def _opt(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002
    return field(default=default, metadata=option(help, **kwargs))


@dataclass
class SemiSupervisedConfig:
    """Everything that defines a semi-supervised run (JSON-able, stored in ``metrics.json``);
    every field is a ``pyro-dvae semisupervised`` flag (declared here, in its metadata).

    Example:
        >>> SemiSupervisedConfig(labels=5).validate()
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: labels must be a positive multiple of the 10 classes \
(the same number per class), got 5; pass e.g. labels=100
    """

    dataset: str = _opt("digits", "data", choices=("digits", "mnist"))
    data_dir: str | None = _opt(None, "directory holding the MNIST files")
    labels: int = _opt(100, "labelled images (same per class)")
    label_seed: int = _opt(0, "which images are labelled")
    estimator: str = _opt("enumerate", "for y", choices=SEMISUPERVISED_ESTIMATORS)
    temperature: float = _opt(1.0, "relaxed y only")
    epochs: int = _opt(20, "passes over the images")
    batch_size: int = _opt(100, "images per step")
    labelled_every: int = _opt(1, "labelled batch every N steps")
    lr: float = _opt(1e-3, "Adam learning rate")
    lr_decay: float = _opt(1.0, "learning rate factor per epoch")
    z_dim: int = _opt(50, "dimension of the style z")
    hidden: tuple[int, ...] = _opt((500,), "hidden widths", type=hidden_sizes, metavar="H,H")
    alpha: float = _opt(200.0, "weight of log q(y|x) per label")
    labelled_weight: float | None = _opt(
        None, "weight of the labelled ELBO per step (default: labels / images)", type=float
    )
    label_shift: int = _opt(0, "shift each labelled image by up to N pixels per axis")
    consistency_weight: float = _opt(
        0.0, "weight of KL(q(y|x) || q(y|perturbed x)) per unlabelled image"
    )
    consistency_shift: int = _opt(0, "consistency: random shift, up to N pixels per axis")
    adversarial_epsilon: float = _opt(0.0, "consistency: virtual adversarial step (L2)")
    consistency_threshold: float = _opt(
        0.0, "consistency: 0 a KL, in (0, 1) FixMatch pseudo-labels this confident"
    )
    batch_norm: bool = _opt(False, "batch norm in the classifier")
    classifier_dropout: float = _opt(0.0, "dropout on the classifier's input pixels")
    intensities: bool = _opt(False, "MNIST grey levels in [0, 1] as targets, not binarized")
    seed: int = _opt(0, "seed of the run")

    def validate(self, classes: int = 10) -> None:
        """Raise :class:`~pyro_dvae.errors.DVAEInputError` (one line) on a bad setting."""
        if self.labels < classes or self.labels % classes:
            raise DVAEInputError(
                f"labels must be a positive multiple of the {classes} classes (the same number "
                f"per class), got {self.labels}; pass e.g. labels=100"
            )
        if self.estimator not in SEMISUPERVISED_ESTIMATORS:
            raise DVAEInputError(
                f"estimator must be one of {', '.join(SEMISUPERVISED_ESTIMATORS)}, got "
                f"{self.estimator!r}"
            )
        for name in ("epochs", "batch_size", "labelled_every", "z_dim"):
            if int(getattr(self, name)) < 1:
                raise DVAEInputError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr_decay <= 1:
            raise DVAEInputError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not self.lr > 0 or not self.temperature > 0 or self.alpha < 0:
            raise DVAEInputError(
                f"lr and temperature must be > 0 and alpha >= 0, got lr={self.lr}, "
                f"temperature={self.temperature}, alpha={self.alpha}"
            )
        for name in ("label_shift", "consistency_shift", "consistency_weight"):
            if getattr(self, name) < 0:
                raise DVAEInputError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.adversarial_epsilon < 0 or not 0 <= self.classifier_dropout < 1:
            raise DVAEInputError(
                "adversarial_epsilon must be >= 0 and classifier_dropout in [0, 1), got "
                f"adversarial_epsilon={self.adversarial_epsilon}, "
                f"classifier_dropout={self.classifier_dropout}"
            )
        if not 0 <= self.consistency_threshold < 1:
            raise DVAEInputError(
                f"consistency_threshold must be in [0, 1), got {self.consistency_threshold}; "
                "pass 0 for the KL or e.g. 0.95 for pseudo-labels"
            )
        if self.labelled_weight is not None and not self.labelled_weight > 0:
            raise DVAEInputError(
                f"labelled_weight must be > 0 (or None: labels / images), got "
                f"{self.labelled_weight}"
            )
        if self.intensities and self.dataset != "mnist":
            raise DVAEInputError(
                f"intensities=True needs MNIST's grey levels, but dataset is {self.dataset!r}; "
                "pass dataset='mnist' or intensities=False"
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d


def pick_labelled(labels: torch.Tensor, per_class: int, seed: int | None) -> torch.Tensor:
    """Indices of ``per_class`` training examples of each class: a random draw with ``seed``
    (``None``: the first ones of each class).

    Example:
        >>> pick_labelled(torch.tensor([0, 1, 0, 1, 1]), 1, seed=None).tolist()
        [0, 1]
    """
    g = None if seed is None else torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels).tolist():
        index = torch.nonzero(labels == c).flatten()
        if len(index) < per_class:
            raise DVAEInputError(
                f"class {c} has {len(index)} training examples, fewer than the {per_class} "
                "labels per class asked for; pass fewer labels"
            )
        if g is not None:
            index = index[torch.randperm(len(index), generator=g)]
        picked.append(index[:per_class])
    return torch.cat(picked)


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``[classes, classes]`` counts, rows the true class, columns the predicted one.

    Example:
        >>> confusion_matrix(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]), 2).tolist()
        [[1, 1], [0, 1]]
    """
    index = labels.long() * classes + predicted.long()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def _elbo(config: SemiSupervisedConfig):
    if config.estimator == "enumerate":
        return EnumeratedELBO()
    return GumbelSoftmaxELBO(
        temperature=config.temperature,
        kl="analytic",
        straight_through=config.estimator == "st-gumbel",
        max_plate_nesting=1,
    )


def train_semisupervised(
    config: SemiSupervisedConfig,
    out: str | Path | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train :class:`~pyro_dvae.models.SemiSupervisedVAE` and return its metrics.

    With ``out``: writes ``metrics.json`` (summary: test accuracy, confusion matrix, seconds per
    epoch, test -ELBO per datum), ``history.csv`` (epoch, train loss, test accuracy, seconds) and
    ``model.pt`` (an atomic checkpoint), each after every epoch, and at the end ``plots/``
    (accuracy curve, confusion matrix, samples of every class).

    :param config: the run's settings.
    :param out: output directory (created).
    :param progress: show a progress bar per epoch where stderr is a terminal.
    :param log: where to print one line per epoch (default: nothing).
    """
    config.validate()
    data = _load(config)
    classes = int(data.train_labels.max()) + 1
    config.validate(classes)
    pyro.set_rng_seed(config.seed)
    x_train, x_test = data.train, data.test
    labelled = pick_labelled(data.train_labels, config.labels // classes, config.label_seed)
    y_labelled = nn.functional.one_hot(data.train_labels[labelled], classes).float()
    m2 = _model(config, data, classes)
    svi = TorchOptimSVI(
        m2.model, m2.guide, lambda ps: torch.optim.Adam(ps, lr=config.lr), _elbo(config)
    )
    n = len(x_train)
    weight = config.labelled_weight or len(labelled) / n * config.labelled_every
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    history: list[dict[str, float]] = []
    g = torch.Generator().manual_seed(config.seed)
    steps = math.ceil(n / config.batch_size)
    for epoch in range(1, config.epochs + 1):
        m2.train()
        perm = torch.randperm(n, generator=g)
        t0, total = time.perf_counter(), 0.0
        bar = progress_bar(enabled=progress, total=steps, desc=f"epoch {epoch}", leave=False)
        for step in range(steps):
            total += svi.step(
                x_train[perm[step * config.batch_size : (step + 1) * config.batch_size]]
            )
            if step % config.labelled_every == 0:
                j = torch.randint(len(labelled), (config.batch_size,), generator=g)
                x_labelled = x_train[labelled[j]]
                if config.label_shift:
                    x_labelled = random_translate(
                        x_labelled, config.label_shift, data.image_shape, generator=g
                    )
                svi.step(x_labelled, y_labelled[j], scale=weight)
            bar.update(1)
        bar.close()
        seconds = time.perf_counter() - t0
        if config.lr_decay != 1.0:
            for group in svi.optimizer.param_groups:
                group["lr"] *= config.lr_decay
        accuracy = m2.accuracy(x_test, data.test_labels)
        history.append(
            {"epoch": epoch, "train_loss": total / n, "test_accuracy": accuracy, "seconds": seconds}
        )
        if log is not None:
            log(f"epoch {epoch}: test accuracy {accuracy:.4f}, {seconds:.1f} s")
        if out is not None and epoch < config.epochs:
            _write(out, config, m2, history, data, classes, plots=False)
    return _write(out, config, m2, history, data, classes, plots=True)


def _load(config: SemiSupervisedConfig) -> BinaryDataset:
    """The dataset, checked for what the configuration needs (labels, image shape)."""
    data = load_dataset(config.dataset, config.data_dir, binarize=not config.intensities)
    if data.train_labels is None or data.test_labels is None:
        raise DVAEInputError(f"dataset {data.name!r} has no labels; use digits or mnist")
    shifts = {"label_shift": config.label_shift, "consistency_shift": config.consistency_shift}
    for name, value in shifts.items():
        if value and data.image_shape is None:
            raise DVAEInputError(
                f"{name}={value} translates images, but dataset {data.name!r} has no image "
                f"shape; pass {name}=0"
            )
    return data


def _model(config: SemiSupervisedConfig, data: BinaryDataset, classes: int) -> SemiSupervisedVAE:
    augment = None
    if config.consistency_shift:  # global RNG: replayable, seeded by pyro.set_rng_seed
        augment = partial(
            random_translate, max_shift=config.consistency_shift, image_shape=data.image_shape
        )
    return SemiSupervisedVAE(
        data.data_dim,
        classes,
        z_dim=config.z_dim,
        hidden=config.hidden,
        alpha=config.alpha,
        batch_norm=config.batch_norm,
        classifier_dropout=config.classifier_dropout,
        consistency_weight=config.consistency_weight,
        augment=augment,
        adversarial_epsilon=config.adversarial_epsilon,
        consistency_threshold=config.consistency_threshold,
    )


def _write(out, config, m2, history, data, classes, plots: bool) -> dict[str, Any]:
    m2.eval()
    with torch.no_grad():
        predicted = m2.classify(data.test)
        test = data.test[:1000]
        with m2.elbo_only():  # the ELBO, whatever the training objective adds
            nelbo = EnumeratedELBO().loss(m2.model, m2.guide, test) / len(test)
    m2.train()
    metrics = {
        "config": config.to_dict(),
        "classes": classes,
        "test_accuracy": history[-1]["test_accuracy"],
        "best_test_accuracy": max(h["test_accuracy"] for h in history),
        "seconds_per_epoch": min(h["seconds"] for h in history),
        "test_nelbo": nelbo,
        "confusion_matrix": confusion_matrix(predicted, data.test_labels, classes).tolist(),
        "epochs_done": len(history),
    }
    if out is None:
        return metrics
    save_checkpoint(
        out / "model.pt", model_state=m2.state_dict(), step=len(history), config=config.to_dict()
    )
    _atomic_text(out / "history.csv", _csv(history))
    _atomic_text(out / "metrics.json", json.dumps(metrics, indent=2))
    if plots:
        _plots(out / "plots", m2, history, metrics, data)
    return metrics


def _plots(out: Path, m2, history, metrics, data) -> None:
    import matplotlib.pyplot as plt

    from ..plots.semisupervised import (
        plot_accuracy_curve,
        plot_class_samples,
        plot_confusion_matrix,
    )

    out.mkdir(exist_ok=True)
    figures = [
        plot_accuracy_curve(history, out / "accuracy.png"),
        plot_confusion_matrix(metrics["confusion_matrix"], out / "confusion.png"),
    ]
    if data.image_shape is not None:
        figures.append(plot_class_samples(m2, data.image_shape, path=out / "class_samples.png"))
    for fig in figures:
        plt.close(fig)


def _csv(rows: list[dict[str, float]]) -> str:
    keys = list(rows[0])
    lines = [",".join(keys)] + [",".join(f"{r[k]:.6g}" for k in keys) for r in rows]
    return "\n".join(lines) + "\n"


def _atomic_text(path: Path, text: str) -> None:
    from ..utils.files import write_text

    write_text(path, text, what=path.name)
