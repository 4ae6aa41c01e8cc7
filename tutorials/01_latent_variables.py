"""Tutorial 1: a discrete latent-variable model in Pyro and its exact marginal likelihood.

What it shows (every number is measured, not asserted):

* A small latent-variable model written as an ordinary Pyro ``model``: ``N`` categorical
  groups of ``K`` classes, ``z_g ~ Categorical(pi_g)`` (one-hot), and ``D`` binary pixels
  ``x_d | z ~ Bernoulli(sigmoid(b_d + sum_g W[g, z_g, d]))``.
* Its exact marginal likelihood, the latent summed out::

      log p(x) = log sum_z p(x | z) p(z)        (a log-sum-exp over all K^N codes z)

  computed with :func:`pyro_dvae.infer.exact_log_likelihood` and checked against an
  independent float64 brute-force sum (:meth:`pyro_dvae.data.SyntheticModel.log_likelihood`).
* The cost of exact marginalization: the number of terms is ``K^N``, exponential in the number
  of latent groups ``N``. The script times ``exact_log_likelihood`` for ``N = 1, 2, ...`` and
  fits the growth rate of the time per extra group; with enough configurations that the fixed
  per-call overhead no longer dominates, it approaches the factor ``K`` per group.

Run ``python tutorials/01_latent_variables.py`` (add ``--out DIR`` for the figure's folder).
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402

from pyro_dvae.data import SyntheticModel  # noqa: E402
from pyro_dvae.distributions import BernoulliVector  # noqa: E402
from pyro_dvae.infer import exact_log_likelihood  # noqa: E402

smoke_test = "CI" in os.environ


def make_model(true: SyntheticModel):
    """A Pyro model whose parameters are those of ``true`` (float32 copies)."""
    prior_logits = true.prior_logits.float()  # [N, K]
    weights = true.weights.float()  # [N, K, D]
    bias = true.bias.float()  # [D]

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            # one site holds all N groups: batch shape [N] moved into the event by to_event(1)
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior_logits).to_event(1))
            # z: [..., N, K] one-hot; written so that it broadcasts over leading dims (the
            # enumeration engine adds one dimension of latent configurations on the left)
            logits = bias + torch.einsum("...nk,nkd->...d", z, weights)
            pyro.sample("x", BernoulliVector(logits), obs=x)

    return model


def time_call(fn, repeats: int) -> float:
    """Best-of-``repeats`` wall time of ``fn()`` in seconds."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    # 1. The model and its exact log p(x), checked against an independent float64 sum.
    true = SyntheticModel.random(args.groups, args.categories, args.data_dim, seed=args.seed)
    x, z = true.sample(args.num_data, generator)
    model = make_model(true)
    log_px = exact_log_likelihood(model, x)
    reference = true.log_likelihood(x)
    max_err = float((log_px.double() - reference).abs().max())
    print(
        f"model: N={args.groups} groups x K={args.categories} classes "
        f"({true.num_configurations} codes), D={args.data_dim} pixels, {args.num_data} data"
    )
    print(
        f"exact mean log p(x) = {float(log_px.mean()):.4f} nats/datum "
        f"(float64 brute force: {float(reference.mean()):.4f}; max |diff| = {max_err:.2e})"
    )
    for i in range(min(3, args.num_data)):
        print(f"  datum {i}: true code z={z[i].tolist()}, log p(x) = {float(log_px[i]):.4f}")

    # 2. Cost of exact marginalization as the number of latent groups grows.
    print(
        f"\ntiming exact_log_likelihood, K={args.categories}, D={args.data_dim}, "
        f"{args.num_data} data (best of {args.repeats}):"
    )
    print(f"{'N':>3} {'K^N':>9} {'seconds':>10} {'us/code':>9}")
    rows = []
    for n in range(1, args.max_groups + 1):
        m = SyntheticModel.random(n, args.categories, args.data_dim, seed=args.seed + n)
        xn, _ = m.sample(args.num_data, generator)
        model_n = make_model(m)
        seconds = time_call(
            lambda model_n=model_n, xn=xn: exact_log_likelihood(model_n, xn), args.repeats
        )
        rows.append((n, m.num_configurations, seconds))
        print(
            f"{n:>3} {m.num_configurations:>9} {seconds:>10.4f} "
            f"{1e6 * seconds / m.num_configurations:>9.2f}"
        )
    # growth factor per extra group over the last three sizes (where the K^N work dominates)
    tail = rows[-3:]
    slope = (math.log(tail[-1][2]) - math.log(tail[0][2])) / (tail[-1][0] - tail[0][0])
    factor = math.exp(slope)
    print(
        f"time grows by x{factor:.2f} per extra group over N={tail[0][0]}..{tail[-1][0]} "
        f"(the number of codes grows by x{args.categories})"
    )

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ns = [r[0] for r in rows]
    ax.semilogy(ns, [r[2] for r in rows], "o-", label="exact_log_likelihood")
    ref = [rows[-1][2] * args.categories ** (n - rows[-1][0]) for n in ns]
    ax.semilogy(ns, ref, "--", color="gray", label=f"proportional to {args.categories}^N")
    ax.set_xlabel("latent groups N")
    ax.set_ylabel("seconds")
    ax.set_title("Exact marginalization cost")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "01_exact_marginalization_time.png", dpi=100)
    plt.close(fig)
    print(f"figure: {out / '01_exact_marginalization_time.png'}")
    return {
        "mean_log_px": float(log_px.mean()),
        "max_error": max_err,
        "timings": rows,
        "growth_factor": factor,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tutorials/01_latent_variables")
    p.add_argument("--groups", type=int, default=3)
    p.add_argument("--categories", type=int, default=4)
    p.add_argument("--data-dim", type=int, default=64 if not smoke_test else 16)
    p.add_argument("--num-data", type=int, default=100 if not smoke_test else 20)
    p.add_argument("--max-groups", type=int, default=8 if not smoke_test else 6)
    p.add_argument("--repeats", type=int, default=3 if not smoke_test else 1)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
