"""``pyro-dvae compare``: train several estimators on the same data, model, seeds and budget and
compare them against the exact answer (results.md/.csv/.json and PNG plots)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..distributed import leave_process_group
from ..errors import DVAEInputError
from ._options import DEVICES, add_data_arguments, check_nproc, check_out_dir
from .launch import launched_by_torchrun, relaunch_with_torchrun, torchrun_rank

__all__ = ["register", "run"]


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid list of numbers {text!r}; write comma-separated numbers, e.g. 0.25,0.5,1"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"empty list {text!r}; write e.g. 0.25,0.5,1")
    return values


def _seeds(text: str) -> tuple[int, ...]:
    """``N`` -> seeds ``0..N-1``; ``a,b,c`` -> those seeds."""
    try:
        if "," in text:
            return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid --seeds {text!r}; give a count (3 -> seeds 0,1,2) or a list such as 0,5,7"
        ) from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"--seeds must be >= 1, got {count}; e.g. --seeds 3")
    return tuple(range(count))


def register(sub: Any) -> None:
    """Add the ``compare`` sub-command to ``sub`` (an argparse subparsers object).

    Example:
        >>> import argparse
        >>> sub = argparse.ArgumentParser().add_subparsers()
        >>> register(sub)
        >>> "compare" in sub.choices
        True
    """
    from ..comparison import DEFAULT_ESTIMATORS, CompareConfig
    from ..infer import KL_CHOICES

    d = CompareConfig()
    p = sub.add_parser(
        "compare",
        help="compare estimators against the exact answer (same data, model, seeds, budget)",
        description="Train every estimator of --estimators once per seed with the same data, "
        "model and step budget; report the exact test NLL, test -ELBO, IWAE NLL, time per step, "
        "steps and seconds to a target NLL and gradient bias/variance against the exact gradient "
        "(mean and SD over seeds) in results.md, CSV and JSON files and PNG plots in --out. "
        "An estimator spec is NAME[:KEY=VALUE...] with keys tau, kl, particles, samples "
        "(gumbel-rao) and lr, e.g. gumbel-softmax:tau=0.5:kl=analytic.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    g = p.add_argument_group("what to compare")
    g.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        metavar="SPEC,SPEC",
        help="comma-separated estimator specs",
    )
    g.add_argument(
        "--seeds", type=_seeds, default=d.seeds, metavar="N|S,S", help="count or list of seeds"
    )
    g.add_argument("--steps", type=int, default=d.steps, help="training steps per run")
    g.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also stop each run after this much training time",
    )
    g.add_argument("--target", type=float, default=None, help="target test NLL (default: auto)")
    g = p.add_argument_group("data and model (shared by every run)")
    add_data_arguments(g, d.base, dataset_help=None, latent_help="'NxK' categorical groups or 'Nb'")
    g.add_argument("--batch-size", type=int, default=d.base.batch_size)
    g.add_argument("--lr", type=float, default=d.base.lr, help="Adam learning rate")
    g.add_argument(
        "--temperature", type=float, default=d.base.temperature, help="tau of specs without tau"
    )
    g.add_argument("--kl", choices=KL_CHOICES, default=d.base.kl, help="KL of specs without kl")
    g.add_argument("--device", choices=DEVICES, default=d.base.device)
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
    g = p.add_argument_group("evaluation and gradient diagnostics")
    g.add_argument("--eval-every", type=int, default=None, help="default: steps / 20")
    g.add_argument("--eval-size", type=int, default=d.eval_size, help="test points for curves")
    g.add_argument("--iwae-samples", type=int, default=d.base.iwae_samples)
    g.add_argument(
        "--diag-samples", type=int, default=d.diag_samples, help="gradient estimates; 0: off"
    )
    g.add_argument("--diag-batch", type=int, default=d.diag_batch, help="training points")
    g.add_argument(
        "--diag-at",
        type=_floats,
        default=d.diag_at,
        metavar="F,F",
        help="checkpoints as fractions of --steps (the last step is always diagnosed)",
    )
    g.add_argument(
        "--diag-temperatures",
        type=_floats,
        default=d.diag_temperatures,
        metavar="T,T",
        help="temperatures diagnosed for relaxed estimators",
    )
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None, help="output directory (default: runs/compare-<time>)")
    g.add_argument("--force", action="store_true", help="allow writing into a non-empty --out")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)


def _config(args: argparse.Namespace):
    from dataclasses import replace

    from ..comparison import CompareConfig

    d = CompareConfig()
    base = replace(
        d.base,
        dataset=args.dataset,
        data_dir=args.data_dir,
        latent=args.latent,
        encoder_hidden=args.encoder_hidden,
        batch_size=args.batch_size,
        lr=args.lr,
        temperature=args.temperature,
        kl=args.kl,
        device=args.device,
        iwae_samples=args.iwae_samples,
    )
    return CompareConfig(
        base=base,
        steps=args.steps,
        seeds=tuple(args.seeds),
        time_budget=args.time_budget,
        eval_every=args.eval_every,
        eval_size=args.eval_size,
        diag_at=tuple(args.diag_at),
        diag_samples=args.diag_samples,
        diag_batch=args.diag_batch,
        diag_temperatures=tuple(args.diag_temperatures),
        target=args.target,
    )


def _out_dir(out: str | None, force: bool) -> Path:
    path = Path(out) if out is not None else Path("runs") / time.strftime("compare-%Y%m%d-%H%M%S")
    return check_out_dir(path, force)


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
    table = format_markdown(result).split("\n\n")
    print("\n\n".join(table[:3]).strip())
    names = ", ".join(p.name for p in written)
    print(
        f"\n{len(specs)} estimators x {len(config.seeds)} seeds in "
        f"{time.perf_counter() - start:.1f} s; wrote {out}/ ({names})"
    )
    return 0
