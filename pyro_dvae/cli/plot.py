"""``pyro-dvae plot RUN_DIR [--out DIR]``: write every figure of a run as PNG files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import DVAEInputError
from ..utils.options import HelpFormatter
from ._options import check_writable_dir

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add ``pyro-dvae plot`` (every figure of a run or comparison directory) to ``sub``, an
    argparse subparsers object.

    Example:
        >>> from pyro_dvae.cli.main import build_parser
        >>> build_parser().parse_args(["plot", "runs/a", "--seed", "3"]).seed
        3
    """
    p = sub.add_parser(
        "plot",
        help="write all figures of a trained run (PNG)",
        description="Write the figures of a trained run: training and ELBO curves, "
        "reconstructions, prior samples, latent traversals, code usage, posterior entropy and "
        "(for labelled data) code vs label. For a directory of runs (sub-directories with a "
        "metrics.json), write their learning curves instead.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory written by 'pyro-dvae train'")
    p.add_argument("--out", default=None, metavar="DIR", help="default: RUN_DIR/plots")
    p.add_argument("--seed", type=int, default=0, help="seed of the prior samples")
    p.add_argument("--force", action="store_true", help="overwrite existing figures")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Plot as asked by ``args``; returns the exit status.

    Example:
        >>> from pyro_dvae.cli.main import build_parser
        >>> run(build_parser().parse_args(["plot", "runs/default"]))  # doctest: +SKIP
        0
    """
    from ..analysis.runs import CHECKPOINT_FILE, run_directory
    from ..plots import plot_comparison_dir, plot_run

    root = Path(args.run_dir)
    if args.seed < 0:
        raise DVAEInputError(f"seed must be an integer >= 0, got {args.seed}")
    if args.out is not None:  # before any figure is drawn
        check_writable_dir(Path(args.out))
    elif root.is_dir():
        check_writable_dir(root, what="run directory")
    if root.is_dir() and not (root / CHECKPOINT_FILE).is_file():
        paths = plot_comparison_dir(root, args.out, overwrite=args.force)
    else:
        run_directory(root)
        paths = plot_run(root, args.out, overwrite=args.force, seed=args.seed)
    out = next(iter(paths.values())).parent
    print(f"wrote {out}/ ({', '.join(paths)})")
    return 0
