"""``pyro-dvae compare``: train several estimators on the same data, model, seeds and budget and
compare them against the exact answer (results.md/.csv/.json and PNG plots)."""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

from ..distributed import leave_process_group
from ..errors import DVAEInputError
from ..utils.files import check_not_locked, run_lock
from ..utils.options import HelpFormatter, add_options, from_args
from ._options import check_nproc, check_out_dir, check_writable_dir
from .launch import launched_by_torchrun, relaunch_with_torchrun, torchrun_rank

__all__ = ["register", "run"]

_GROUPS = (
    "what to compare",
    "data and model (shared by every run)",
    "evaluation and gradient diagnostics",
)
#: the TrainConfig options shared by every run of a comparison (the rest are per spec or fixed)
_BASE_OPTIONS = (
    "dataset",
    "data_dir",
    "latent",
    "encoder_hidden",
    "batch_size",
    "lr",
    "temperature",
    "kl",
    "device",
)
_BASE_HELP = {
    "dataset": None,
    "latent": "'NxK' categorical groups or 'Nb'",
    "temperature": "tau of specs without tau",
    "kl": "KL of specs without kl",
}


def register(sub: Any) -> None:
    """Add ``pyro-dvae compare`` (estimators against the exact answer) to ``sub``, an argparse
    subparsers object; the shared training options come from
    :class:`~pyro_dvae.training.TrainConfig`, the rest from
    :class:`~pyro_dvae.comparison.CompareConfig`'s fields.

    Example:
        >>> from pyro_dvae.cli.main import build_parser
        >>> build_parser().parse_args(["compare", "--seeds", "2"]).seeds
        (0, 1)
    """
    from ..comparison import DEFAULT_ESTIMATORS, CompareConfig
    from ..training import TrainConfig

    d = CompareConfig()
    p = sub.add_parser(
        "compare",
        help="compare estimators against the exact answer (same data, model, seeds, budget)",
        description="Train every estimator of --estimators once per seed with the same data, "
        "model and step budget; report the exact test NLL, test -ELBO, IWAE NLL, time per step, "
        "steps and seconds to a target NLL and gradient bias/variance against the exact gradient "
        "(mean and SD over seeds) in results.md, CSV and JSON files and PNG plots in --out. "
        "An estimator spec is NAME[:KEY=VALUE...] with keys tau, kl, particles, samples "
        "(gumbel-rao), categorical (disarm: stick-breaking or loo) and lr, e.g. "
        "gumbel-softmax:tau=0.5:kl=analytic or disarm:categorical=loo.",
        formatter_class=HelpFormatter,
    )
    groups = {title: p.add_argument_group(title) for title in _GROUPS}
    g = groups["what to compare"]
    g.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        metavar="SPEC,SPEC",
        help="comma-separated estimator specs",
    )
    add_options(p, CompareConfig, ["steps", "seeds", "time_budget", "target"], groups=groups)
    g = groups["data and model (shared by every run)"]
    add_options(
        p, TrainConfig, _BASE_OPTIONS, defaults=d.base, group=g, help=_BASE_HELP, groups=groups
    )
    g.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 1 keeps step times comparable and avoids stalls on a busy "
        "machine (the runs are small and sequential)",
    )
    g.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="spread the (estimator, seed) runs over N processes (runs torchrun); each run "
        "still trains in one process",
    )
    g = groups["evaluation and gradient diagnostics"]
    add_options(p, CompareConfig, ["eval_every", "eval_size"], groups=groups)
    add_options(
        p, TrainConfig, ["iwae_samples"], defaults=d.base, group=g, help={"iwae_samples": None}
    )
    add_options(
        p,
        CompareConfig,
        ["diag_samples", "diag_batch", "diag_at", "diag_temperatures"],
        groups=groups,
    )
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="output directory (default: runs/compare-<time>)")
    g.add_argument("--force", action="store_true", help="allow writing into a non-empty --out")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)


def _config(args: argparse.Namespace):
    from ..comparison import CompareConfig
    from ..training import TrainConfig

    names = (*_BASE_OPTIONS, "iwae_samples")
    base = from_args(TrainConfig, args, base=CompareConfig().base, names=names)
    return from_args(CompareConfig, args, base=CompareConfig(base=base))


def _out_dir(out: str | None, force: bool) -> Path:
    path = Path(out) if out is not None else Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    check_not_locked(path)  # a live comparison or run writes there: say so, whatever --force says
    return check_writable_dir(check_out_dir(path, force))


def run(args: argparse.Namespace) -> int:
    """Run the comparison asked for by ``args``; returns the exit status.

    Example:
        >>> from pyro_dvae.cli.main import build_parser
        >>> args = build_parser().parse_args(["compare", "--estimators", "exact", "--steps", "5"])
        >>> run(args)  # doctest: +SKIP
        0
    """
    import torch

    from ..comparison import format_markdown, parse_specs, run_comparison, summarize, write_results

    start = time.perf_counter()
    specs = parse_specs(args.estimators)
    config = _config(args)
    config.validate()
    for spec in specs:  # every run's config is checked before the first one trains
        config.train_config(spec, config.seeds[0])
    if args.threads < 1:
        raise DVAEInputError(f"--threads must be >= 1, got {args.threads}; e.g. --threads 1")
    check_nproc(args.nproc)
    rank = torchrun_rank()
    if rank == 0:
        out = _out_dir(args.out, args.force)
    if args.nproc > 1 and not launched_by_torchrun():
        extra = ["--out", str(out)] if args.out is None else []
        return relaunch_with_torchrun(args, args.nproc, extra)
    lock = contextlib.ExitStack()  # --out belongs to this comparison until it ends
    if rank == 0:
        lock.enter_context(run_lock(out))
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    raw = None
    try:
        raw = run_comparison(specs, config, progress=not args.no_progress)
        if rank > 0:  # rank 0 writes the results of all ranks
            return 0
        # written before leaving the process group: a rank's teardown cannot cost the results
        result = summarize(raw, target=config.target)
        written = write_results(result, out)
    finally:
        torch.set_num_threads(threads)
        leave_process_group(ok=raw is not None)
        lock.close()
    table = format_markdown(result).split("\n\n")
    print("\n\n".join(table[:3]).strip())
    names = ", ".join(p.name for p in written)
    print(
        f"\n{len(specs)} estimators x {len(config.seeds)} seeds in "
        f"{time.perf_counter() - start:.1f} s; wrote {out}/ ({names})"
    )
    return 0
