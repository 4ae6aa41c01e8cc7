"""Cost per training step of every registered estimator, on one model, in one interleaved run.

Each estimator trains the same :class:`~pyro_dvae.DiscreteVAE` (the embedded digits' size by
default: 64 pixels, ``4x8`` one-hot latents, encoder 64-128-64, batch 100, Adam 1e-3) with
:func:`~pyro_dvae.infer.build_elbo`'s defaults, the way ``pyro-dvae train --estimator NAME``
builds it: temperature 1, analytic KL, one particle (two for the estimators that need at least
two, ``--particles`` for all). The steps are timed round-robin: every round runs ``--steps``
steps of each estimator in turn, so that machine noise hits all alike. Prints the median
milliseconds per step over the rounds and the ratio to ``gumbel-softmax``; ``--capture``
chooses between eager steps (``off``, Pyro's handlers every step: the default, since not every
estimator can be captured) and what training uses (``auto``).

    python benchmarks/bench_estimators.py --threads 1          # digits 4x8
    python benchmarks/bench_estimators.py --latent 12b         # Bernoulli units
    python benchmarks/bench_estimators.py --smoke              # seconds, for the test suite

``--disarm-loop`` adds a row ``disarm-loop``: DisARM with its antithetic pairs drawn in a loop
of two guide and model runs each (``DisARMELBO(vectorize_pairs=False)``) instead of the
registry's one vectorized run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from bench_step import make_data  # the same binary data as the step-time benchmark

from pyro_dvae import DiscreteVAE
from pyro_dvae.infer import ESTIMATORS, TorchOptimSVI, build_elbo, get_estimator
from pyro_dvae.infer.captured_step import CAPTURE_MODES

REFERENCE = "gumbel-softmax"
LOOP = "disarm-loop"  # DisARM without vectorized pairs (--disarm-loop)


def make_step(name: str, args: argparse.Namespace, x: torch.Tensor):
    """A closure running one SVI step of estimator ``name`` on a fresh model."""
    torch.manual_seed(0)
    vae = DiscreteVAE(x.shape[-1], args.latent, encoder_hidden=(128, 64))
    base = "disarm" if name == LOOP else name
    particles = max(args.particles, get_estimator(base).min_particles)
    elbo = build_elbo(base, num_particles=particles, max_plate_nesting=1)
    if name == LOOP:
        elbo.vectorize_pairs = False
    svi = TorchOptimSVI(
        vae.model, vae.guide, lambda ps: torch.optim.Adam(ps, lr=1e-3), elbo, capture=args.capture
    )
    return lambda: svi.step(x)


def time_estimators(args: argparse.Namespace) -> dict[str, float]:
    """Median ms/step of each estimator over ``args.rounds`` interleaved rounds."""
    x = make_data(args.batch_size, args.data_dim)
    names = args.estimators or list(ESTIMATORS)
    if args.disarm_loop:
        names = names + [LOOP]
    steps = {name: make_step(name, args, x) for name in names}
    for step in steps.values():  # warm-up: first-step setup, capture, lazy modules
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[name].append(1e3 * (time.perf_counter() - start) / args.steps)
    return {name: statistics.median(ts) for name, ts in times.items()}


def format_table(ms: dict[str, float], particles: int) -> str:
    """A markdown table: estimator, samples per datum, median ms/step, ratio to the reference."""
    ref = ms.get(REFERENCE)
    lines = ["| estimator | particles | ms/step | x gumbel-softmax |", "|---|---|---|---|"]
    for name, value in sorted(ms.items(), key=lambda item: item[1]):
        ratio = f"{value / ref:.2f}" if ref else "-"
        info = get_estimator("disarm" if name == LOOP else name)
        used = max(particles, info.min_particles) if info.takes("num_particles") else "-"
        lines.append(f"| `{name}` | {used} | {value:.2f} | {ratio} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    ms = time_estimators(args)
    print(
        f"latent {args.latent}, data dim {args.data_dim}, batch {args.batch_size}, "
        f"capture {args.capture}, {args.threads} thread(s), {args.rounds} rounds x "
        f"{args.steps} steps (median over rounds), load average {os.getloadavg()[0]:.1f}"
    )
    print(format_table(ms, args.particles))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--smoke", action="store_true", help="tiny sizes and counts, for the tests")
    p.add_argument("--latent", default="4x8", help="'NxK' one-hot groups or 'Nb' Bernoulli")
    p.add_argument("--data-dim", type=int, default=64, help="pixels per datum")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--particles", type=int, default=1, help="samples per datum per step")
    p.add_argument(
        "--estimators", type=lambda s: s.split(","), default=None, help="comma list; default all"
    )
    p.add_argument("--disarm-loop", action="store_true", help=f"add a row {LOOP!r}")
    p.add_argument("--capture", choices=CAPTURE_MODES, default="off", help="step capture mode")
    p.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    p.add_argument("--steps", type=int, default=10, help="steps per estimator per round")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps per estimator first")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    if args.smoke:
        args.latent, args.data_dim, args.batch_size = "2x3", 12, 8
        args.rounds, args.steps, args.warmup = 2, 1, 1
    return args


if __name__ == "__main__":
    main(parse_args())
