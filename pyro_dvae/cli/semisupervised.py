"""``pyro-dvae semisupervised``: train the M2 model on a few labels (``--labels N``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..training.semisupervised import (
    SEMISUPERVISED_ESTIMATORS,
    SemiSupervisedConfig,
    train_semisupervised,
)
from ..utils.options import hidden_sizes
from ._options import check_out_dir

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add ``pyro-dvae semisupervised`` (M2 on a few labels) to ``sub``, an argparse subparsers
    object.

    Example:
        >>> from pyro_dvae.cli.main import build_parser
        >>> build_parser().parse_args(["semisupervised", "--labels", "20"]).labels
        20
    """
    d = SemiSupervisedConfig()
    p = sub.add_parser(
        "semisupervised",
        help="train the semi-supervised M2 model (class y summed exactly or relaxed)",
        description="Train Kingma et al.'s M2 model on a few labelled images: y is summed out "
        "exactly (enumerate) or relaxed (gumbel-softmax, st-gumbel) on the unlabelled ones. "
        "Writes metrics.json (test accuracy, confusion matrix), history.csv, model.pt and "
        "plots/ (accuracy curve, confusion matrix, samples of every class).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", choices=("digits", "mnist"), default=d.dataset, help="data")
    p.add_argument("--data-dir", default=None, help="directory holding the MNIST files")
    p.add_argument("--labels", type=int, default=d.labels, help="labelled images (same per class)")
    p.add_argument("--label-seed", type=int, default=d.label_seed, help="which images are labelled")
    p.add_argument(
        "--estimator", choices=SEMISUPERVISED_ESTIMATORS, default=d.estimator, help="for y"
    )
    p.add_argument("--temperature", type=float, default=d.temperature, help="relaxed y only")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the images")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="images per step")
    p.add_argument(
        "--labelled-every", type=int, default=d.labelled_every, help="labelled batch every N steps"
    )
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--z-dim", type=int, default=d.z_dim, help="dimension of the style z")
    p.add_argument(
        "--hidden", type=hidden_sizes, default=d.hidden, metavar="H,H", help="hidden widths"
    )
    p.add_argument("--alpha", type=float, default=d.alpha, help="weight of log q(y|x) per label")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the run")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="runs/semisupervised", help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Validate, train, print the summary; errors propagate as one-line DVAEInputErrors."""
    config = SemiSupervisedConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        labels=args.labels,
        label_seed=args.label_seed,
        estimator=args.estimator,
        temperature=args.temperature,
        epochs=args.epochs,
        batch_size=args.batch_size,
        labelled_every=args.labelled_every,
        lr=args.lr,
        z_dim=args.z_dim,
        hidden=tuple(args.hidden),
        alpha=args.alpha,
        seed=args.seed,
    )
    config.validate()
    out = check_out_dir(Path(args.out), args.force)
    if args.threads >= 1:
        torch.set_num_threads(args.threads)
    metrics = train_semisupervised(config, out, progress=not args.no_progress, log=print)
    print(
        f"test accuracy {100 * metrics['test_accuracy']:.2f}% "
        f"(best {100 * metrics['best_test_accuracy']:.2f}%), test -ELBO "
        f"{metrics['test_nelbo']:.2f} nats, {metrics['seconds_per_epoch']:.1f} s/epoch; "
        f"wrote {out}"
    )
    return 0
