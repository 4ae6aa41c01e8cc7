"""``pyro-dvae semisupervised``: train the M2 model on a few labels (``--labels N``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..training.semisupervised import (
    SemiSupervisedConfig,
    train_semisupervised,
)
from ..utils.files import check_not_locked, run_lock
from ..utils.options import HelpFormatter, add_options, from_args
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
    p = sub.add_parser(
        "semisupervised",
        help="train the semi-supervised M2 model (class y summed exactly or relaxed)",
        description="Train Kingma et al.'s M2 model on a few labelled images: y is summed out "
        "exactly (enumerate) or relaxed (gumbel-softmax, st-gumbel) on the unlabelled ones. "
        "Writes metrics.json (test accuracy, confusion matrix), history.csv, model.pt and "
        "plots/ (accuracy curve, confusion matrix, samples of every class).",
        formatter_class=HelpFormatter,
    )
    add_options(p, SemiSupervisedConfig)  # every field, declared on the config
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default="runs/semisupervised", help="output directory")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Validate, train, print the summary; errors propagate as one-line DVAEInputErrors."""
    config = from_args(SemiSupervisedConfig, args)
    config.validate()
    check_not_locked(args.out)  # a live run writes there: say so, whatever --force says
    out = check_out_dir(Path(args.out), args.force)
    if args.threads >= 1:
        torch.set_num_threads(args.threads)
    with run_lock(out, create=True):  # --out belongs to this run until it ends
        metrics = train_semisupervised(config, out, progress=not args.no_progress, log=print)
    print(
        f"test accuracy {100 * metrics['test_accuracy']:.2f}% "
        f"(best {100 * metrics['best_test_accuracy']:.2f}%), test -ELBO "
        f"{metrics['test_nelbo']:.2f} nats, {metrics['seconds_per_epoch']:.1f} s/epoch; "
        f"wrote {out}"
    )
    return 0
