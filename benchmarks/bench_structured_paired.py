"""Exact log p(x) of structured models, ours vs Pyro's, paired call by call in one process.

``bench_exact.py`` times each side in its own subprocess (for peak memory); on a loaded machine a
best-of-N there can land on a stall for one side only. Here ``exact_log_likelihood(model, x)``
and ``TraceEnum_ELBO(max_plate_nesting).loss(model, empty guide, x)`` alternate call by call on
the same model and data, and the best of each over ``--pairs`` pairs gives the ratio:

- ``hmm-T<T>``: an HMM, S = 10 states, ``pyro.markov`` over T steps, 10 sequences;
- ``mix-K<K>``: a K-component mixture local to every pixel, 100 data x 784 pixels.

    python benchmarks/bench_structured_paired.py                # every case
    python benchmarks/bench_structured_paired.py --smoke        # seconds, for the test suite
"""

from __future__ import annotations

import argparse
import time

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import TraceEnum_ELBO

from pyro_dvae.infer import exact_log_likelihood


def hmm_case(num_steps: int, states: int = 10, sequences: int = 10):
    g = torch.Generator().manual_seed(0)
    trans = torch.softmax(torch.randn(states, states, generator=g), -1)
    locs = torch.randn(states, generator=g) * 2
    x = torch.randn(num_steps, sequences, generator=g)

    def model(x):
        z = 0
        with pyro.plate("sequences", sequences, dim=-1):
            for t in pyro.markov(range(num_steps)):
                z = pyro.sample(
                    f"z{t}", dist.Categorical(trans[z]), infer={"enumerate": "parallel"}
                )
                pyro.sample(f"x{t}", dist.Normal(locs[z], 1.0), obs=x[t])

    return model, x, 1


def mixture_case(components: int, num_data: int = 100, pixels: int = 784):
    g = torch.Generator().manual_seed(0)
    locs = torch.randn(components, generator=g) * 3
    weights = torch.softmax(torch.randn(components, generator=g), 0)
    x = torch.randn(num_data, pixels, generator=g)

    def model(x):
        with pyro.plate("data", num_data, dim=-2), pyro.plate("pix", pixels, dim=-1):
            z = pyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)

    return model, x, 2


def paired(model, x, nesting: int, pairs: int) -> tuple[float, float, float]:
    elbo = TraceEnum_ELBO(max_plate_nesting=nesting)

    def empty_guide(x):
        pass

    def ours():
        return float(exact_log_likelihood(model, x).sum())

    def pyros():
        return -elbo.loss(model, empty_guide, x)

    diff = abs(ours() - pyros())  # also the warm-up
    best = {"ours": float("inf"), "pyro": float("inf")}
    for i in range(pairs):
        order = (
            (("ours", ours), ("pyro", pyros)) if i % 2 == 0 else (("pyro", pyros), ("ours", ours))
        )
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best["ours"], best["pyro"], diff


def main(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    cases = {f"hmm-T{t}": (hmm_case, t) for t in args.steps}
    cases.update({f"mix-K{k}": (mixture_case, k) for k in args.components})
    threads = torch.get_num_threads()
    print(f"threads {threads}, best of {args.pairs} alternating pairs (fewer at T >= 1000)")
    print(f"{'case':>10} | {'ours s':>8} | {'pyro s':>8} | ours/pyro | |sum diff|")
    for name, (make, size) in cases.items():
        model, x, nesting = make(size)
        pairs = max(3, args.pairs // 5) if name.startswith("hmm") and size >= 1000 else args.pairs
        ours, pyro_s, diff = paired(model, x, nesting, pairs)
        print(f"{name:>10} | {ours:8.4f} | {pyro_s:8.4f} | {ours / pyro_s:9.3f} | {diff:.2e}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny cases, a few pairs")
    p.add_argument("--steps", type=int, nargs="+", default=None, help="HMM lengths T")
    p.add_argument("--components", type=int, nargs="+", default=None, help="mixture sizes K")
    p.add_argument("--pairs", type=int, default=None, help="alternating pairs per case")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.steps = args.steps or ([5] if args.smoke else [10, 100, 1000])
    args.components = args.components or ([3] if args.smoke else [3, 5, 10])
    args.pairs = args.pairs or (2 if args.smoke else 15)
    return args


if __name__ == "__main__":
    main(parse_args())
