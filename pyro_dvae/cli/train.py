"""``pyro-dvae train``: fit a discrete VAE, evaluate it, write metrics, checkpoint and plots."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..distributed import leave_process_group
from ..errors import DVAEInputError
from ..latent import LatentSpec
from ..utils.files import check_not_locked
from ..utils.options import HelpFormatter, add_options, flag_names, from_args
from ..utils.threads import resolve_threads
from ._options import check_nproc, check_out_dir
from .launch import launched_by_torchrun, relaunch_with_torchrun, torchrun_rank

if TYPE_CHECKING:
    from ..training import RunMetrics

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add ``pyro-dvae train`` to ``sub``, an argparse subparsers object: one flag per
    :class:`~pyro_dvae.training.TrainConfig` field (declared there), and the run-directory flags.

    Example:
        >>> from pyro_dvae.cli.main import build_parser
        >>> build_parser().parse_args(["train", "--particles", "2"]).num_particles
        2
    """
    from ..training import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a discrete VAE and evaluate it (nats/datum)",
        description="Train a discrete VAE, evaluate the test set (-ELBO, IWAE and exact NLL in "
        "nats/datum) and write metrics.json, checkpoint.pt and plots to --out.",
        formatter_class=HelpFormatter,
    )
    titles = ("data and model", "estimator", "optimization", "evaluation and output")
    groups = {title: p.add_argument_group(title) for title in titles}
    add_options(p, TrainConfig, groups=groups)  # every TrainConfig field, declared there
    g = groups["optimization"]
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads per process (default: the cores the 1-minute load average "
        "leaves idle, 1 to 4; torch's one-per-core default ran 3-6x slower on a busy machine)",
    )
    g.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel training in N processes on this machine (runs torchrun; gloo on "
        "CPU, NCCL with --device cuda); for several machines call torchrun yourself",
    )
    g = groups["evaluation and output"]
    g.add_argument("--out", default=None, help="output directory (default: runs/<timestamp>)")
    g.add_argument(
        "--force",
        action="store_true",
        help="allow writing into a non-empty --out; a previous run's checkpoint there is only "
        "replaced once the new run has written its own",
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        metavar="STEPS",
        help="also checkpoint every STEPS steps (always: at the start, after every epoch and "
        "on Ctrl-C)",
    )
    g.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its checkpoint, with its stored settings; the "
        "result equals an uninterrupted run. A larger --epochs or --max-steps extends a "
        "finished run (as an uninterrupted run of that length; not with --lr-schedule cosine, "
        "whose rates depend on the length)",
    )
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(run=run)


def _config(args: argparse.Namespace):
    from ..training import TrainConfig

    return from_args(TrainConfig, args)


def _out_dir(out: str | None, config: Any, force: bool) -> Path:
    if out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path("runs") / f"{stamp}-{config.dataset}-{config.latent}-{config.estimator}"
    else:
        path = Path(out)
    check_not_locked(path)  # a live run there: say so, whatever --force says
    return check_out_dir(path, force)


def _fmt(value: float | None) -> str:
    return "n/a (latent space too large)" if value is None else f"{value:.3f} nats/datum"


def _summary(m: RunMetrics, out: Path) -> str:
    rows = [
        ("test -ELBO", m["test_nelbo"]),
        (f"test NLL (IWAE-{m['eval']['iwae_samples']})", m["test_nll_iwae"]),
        ("test NLL (exact)", m["test_nll_exact"]),
    ]
    if m.get("true_test_nll") is not None:
        rows.append(("true model test NLL", m["true_test_nll"]))
    lines = [
        f"trained {m['dataset']} latent={m['latent']} estimator={m['estimator']}: "
        f"{m['steps']} steps in {m['seconds']:.1f} s"
    ]
    lines += [f"  {label:<24}{_fmt(value)}" for label, value in rows]
    if m.get("active_groups") is not None:
        groups = LatentSpec.parse(m["latent"]).groups
        lines.append(
            f"  {'test KL(q || p)':<24}{_fmt(m['test_kl'])}, {m['active_groups']} of {groups} "
            f"latent groups active (mean KL > {m['eval']['active_kl_threshold']} nats)"
        )
    lines.append(f"wrote {out}/ (metrics.json, history.jsonl, checkpoint.pt, *.png)")
    return "\n".join(lines)


#: options that may differ from the stored run's on --resume: its length (extend a finished run)
_LENGTH = ("epochs", "max_steps")


def _given(args: argparse.Namespace, name: str, default: Any) -> bool:
    """Whether option ``name`` was given (on the command line or with a non-default value)."""
    flag = flag_names(type(default))[name]
    argv = getattr(args, "argv", None) or []
    given = any(a == flag or a.startswith(flag + "=") for a in argv)
    return given or getattr(args, name) != getattr(default, name)


def _resume(args: argparse.Namespace) -> tuple[Any, Path, int]:
    """The stored config (checked against options given with ``--resume``; a new ``--epochs``
    or ``--max-steps`` changes the run's length), run dir, step."""
    from dataclasses import fields, replace

    from ..training import TrainConfig, resume_point

    config, path, step = resume_point(args.resume)
    run_dir = path.parent
    if args.out is not None and Path(args.out).resolve() != run_dir.resolve():
        raise DVAEInputError(
            f"--resume continues the run in {run_dir} and writes there; drop --out {args.out}"
        )
    given, default = _config(args), TrainConfig()
    flags = flag_names(TrainConfig)
    conflicts = [
        f"{flags[f.name]} {getattr(given, f.name)} (run: {getattr(config, f.name)})"
        for f in fields(TrainConfig)
        if f.name in flags
        and f.name not in ("data_dir", *_LENGTH)
        and getattr(given, f.name) != getattr(default, f.name)
        and getattr(given, f.name) != getattr(config, f.name)
    ]
    if conflicts:
        raise DVAEInputError(
            f"--resume {args.resume} continues with the run's stored settings, but "
            f"{', '.join(conflicts)} differ; drop those options or start a new run with --out"
        )
    if args.data_dir is not None:  # the data may have moved; their checksum is verified
        config = replace(config, data_dir=args.data_dir)
    length = {name: getattr(given, name) for name in _LENGTH if _given(args, name, default)}
    return replace(config, **length), run_dir, step


def _extended(config: Any, metrics: Any, step: int) -> str:
    """`` to step N (epochs=E, max_steps=M)``: where the resumed run ended, if it trained."""
    if metrics["steps"] <= step:
        return ""
    length = f"epochs={config.epochs}"
    if config.max_steps is not None:
        length += f", max_steps={config.max_steps}"
    return f" to step {metrics['steps']} ({length})"


def _launch(args: argparse.Namespace) -> int:
    """Re-run this command under torchrun, once bad input has been refused here."""
    config, extra = _config(args), []
    if args.resume is None:
        config.validate()
        if args.out is not None:
            _out_dir(args.out, config, args.force)
        else:  # one output directory for all ranks
            extra = ["--out", str(_out_dir(None, config, args.force))]
    return relaunch_with_torchrun(args, args.nproc, extra)


def run(args: argparse.Namespace) -> int:
    """Train as asked by ``args``; returns the exit status.

    Example:
        >>> from pyro_dvae.cli.main import build_parser
        >>> args = build_parser().parse_args(["train", "--latent", "2x3", "--epochs", "1"])
        >>> run(args)  # doctest: +SKIP
        0
    """
    from ..training import TrainingInterrupted, train

    check_nproc(args.nproc)
    threads = resolve_threads(args.threads)
    if args.nproc > 1 and not launched_by_torchrun():
        return _launch(args)
    torch.set_num_threads(threads)
    rank = torchrun_rank()
    if args.resume is not None:
        config, out, step = _resume(args)
    else:
        config, step = _config(args), None
        config.validate()
        out = _out_dir(args.out, config, args.force) if rank == 0 else Path(args.out or ".")
    metrics = None
    try:
        metrics = train(
            config,
            out_dir=out,
            progress=not args.no_progress,
            resume=out if step is not None else None,
            checkpoint_every=args.checkpoint_every,
            force=args.force,
        )
    except TrainingInterrupted as e:
        print(f"pyro-dvae: {e}", file=sys.stderr)
        return 128 + e.signum
    except OSError as e:  # not one of the package's writes (those raise DVAEWriteError)
        name = f" {e.filename}" if getattr(e, "filename", None) else ""
        print(
            f"pyro-dvae: error: could not write{name} ({e.strerror or type(e).__name__}); free "
            f"space or fix permissions, then continue with --resume {out} (its last complete "
            "checkpoint, if any, is kept)",
            file=sys.stderr,
        )
        return 2
    finally:
        leave_process_group(ok=metrics is not None)
    if rank > 0:
        return 0
    if step is not None:
        print(f"resumed {out} from step {step}" + _extended(config, metrics, step))
    print(_summary(metrics, out))
    return 0
