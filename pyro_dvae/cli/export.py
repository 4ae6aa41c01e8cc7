"""``pyro-dvae export RUN_DIR --out FILE.nc``: a trained run as ArviZ data in a netCDF file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import DVAEInputError
from ..utils.options import HelpFormatter, positive_int
from ._options import check_writable_file

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add ``pyro-dvae export`` (a trained run as ArviZ data) to ``sub``, an argparse
    subparsers object.

    Example:
        >>> from pyro_dvae.cli.main import build_parser
        >>> args = ["export", "runs/a", "--out", "a.nc", "--num-chains", "2"]
        >>> build_parser().parse_args(args).num_chains
        2
    """
    p = sub.add_parser(
        "export",
        help="export a trained run to ArviZ data (netCDF)",
        description="Sample q(z|x), p(x|z) and the prior of a trained run on a data split and "
        "write ArviZ data (posterior, posterior_predictive, log_likelihood, prior, "
        "prior_predictive, observed_data, constant_data, training) to a netCDF file.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory written by 'pyro-dvae train'")
    p.add_argument("--out", required=True, metavar="FILE.nc", help="netCDF file to write")
    p.add_argument(
        "--split",
        choices=("train", "valid", "test"),
        default="test",
        help="data split whose observations are exported",
    )
    p.add_argument(
        "--num-observations",
        type=positive_int,
        default=200,
        help="export the first N observations of the split",
    )
    p.add_argument("--num-samples", type=positive_int, default=100, help="draws per chain")
    p.add_argument("--num-chains", type=positive_int, default=4, help="independent sample streams")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Export as asked by ``args``; returns the exit status.

    Example:
        >>> from pyro_dvae.cli.main import build_parser
        >>> args = build_parser().parse_args(["export", "runs/default", "--out", "post.nc"])
        >>> run(args)  # doctest: +SKIP
        0
    """
    from ..analysis.runs import run_directory

    run_directory(args.run_dir)
    out = Path(args.out)
    if out.is_dir():
        raise DVAEInputError(f"--out {out} is a directory; pass a file name such as {out}/run.nc")
    if out.exists() and not args.force:
        raise DVAEInputError(
            f"--out {out} already exists; pass --force to overwrite it or choose another --out"
        )
    if not out.parent.is_dir():
        raise DVAEInputError(f"directory {out.parent} of --out does not exist; create it first")
    check_writable_file(out)  # before the sampling, not after it
    if args.seed < 0:
        raise DVAEInputError(f"seed must be an integer >= 0, got {args.seed}")
    from ..analysis._arviz_compat import group_names  # imports ArviZ
    from ..analysis.arviz_export import export_run, save_inference_data

    idata = export_run(
        args.run_dir,
        split=args.split,
        num_observations=args.num_observations,
        num_samples=args.num_samples,
        num_chains=args.num_chains,
        seed=args.seed,
    )
    save_inference_data(idata, out, overwrite=args.force)
    print(f"wrote {out} ({', '.join(group_names(idata))})")
    return 0
