"""EnumeratedELBO vs Pyro's TraceEnum_ELBO on the semi-supervised M2 model (y summed, z sampled).

One unlabelled training step (``loss_and_grads``) of :class:`pyro_dvae.models.SemiSupervisedVAE`
(784 pixels, 10 classes, z 50, hidden 500, batch 200), timed
interleaved: ours, Pyro's, ours, ... with the same seed before each pair, so both draw the same
noise; the losses are printed side by side (they must be equal) with the median ms/step and the
ratio ours/Pyro.

    python benchmarks/bench_mixed_enumeration.py --threads 1
    python benchmarks/bench_mixed_enumeration.py --smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import pyro
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from pyro_dvae.infer import EnumeratedELBO
from pyro_dvae.models import SemiSupervisedVAE


def main(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    hidden, batch = (32, 20) if args.smoke else (500, 200)
    m2 = SemiSupervisedVAE(784, args.classes, z_dim=50, hidden=hidden, alpha=46.0)
    x = torch.rand(batch, 784).bernoulli()
    ours, theirs = EnumeratedELBO(), TraceEnum_ELBO(max_plate_nesting=1)
    guides = {"ours": (ours, m2.guide), "pyro": (theirs, config_enumerate(m2.guide))}

    def step(name: str, seed: int) -> tuple[float, float]:
        elbo, guide = guides[name]
        m2.zero_grad()
        pyro.set_rng_seed(seed)
        t0 = time.perf_counter()
        loss = elbo.loss_and_grads(m2.model, guide, x)
        return loss, time.perf_counter() - t0

    for name in guides:  # warm-up
        step(name, 0)
    times: dict[str, list[float]] = {name: [] for name in guides}
    for r in range(args.repeats):
        losses = {}
        for name in guides:
            losses[name], seconds = step(name, r)
            times[name].append(seconds)
        print(f"seed {r}: loss ours {losses['ours']:.4f}  pyro {losses['pyro']:.4f}")
    ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
    ratio = ms["ours"] / ms["pyro"]
    print(
        f"classes {args.classes}, {args.threads} thread(s): ours {ms['ours']:.1f} ms/step, "
        f"Pyro TraceEnum_ELBO {ms['pyro']:.1f} ms/step, ratio ours/Pyro {ratio:.3f}"
    )
    return {"ours_ms": ms["ours"], "pyro_ms": ms["pyro"], "ratio": ratio}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes (10)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per ELBO (10)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    args = parser.parse_args(argv)
    if args.smoke or "CI" in os.environ:
        args.smoke, args.repeats = True, min(args.repeats, 2)
    return args


if __name__ == "__main__":
    main(parse_args())
