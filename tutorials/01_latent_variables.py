r"""Tutorial 1: a discrete latent-variable model and its exact marginal likelihood
=================================================================================

A latent-variable model explains each observation :math:`x` by an unobserved cause :math:`z`: a
prior :math:`p(z)` says which causes are likely, a likelihood :math:`p(x \mid z)` says what each
cause produces. What we can evaluate, and what we want to maximize when we fit the model, is the
probability of the data *with the cause summed out*, the **marginal likelihood**

.. math::

   p(x) = \sum_z p(x \mid z)\, p(z).

When :math:`z` is discrete and small this sum can be computed exactly, and this tutorial does so:
it writes a small categorical model as an ordinary Pyro ``model``, computes :math:`\log p(x)` by
enumerating every latent code, checks it against an independent float64 sum, and measures what
exactness costs as the latent space grows. Every number below is measured, not asserted.
"""

# %%
# Setup
# -----
# Every tutorial is a plain script: its sizes are command-line options (``--help`` lists them),
# and ``smoke_test`` (the environment variable ``CI`` is set) shrinks them so that the test suite
# and the documentation build run it in seconds.

import argparse
import math
import os
import runpy
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch

from pyro_dvae.data import SyntheticModel
from pyro_dvae.distributions import BernoulliVector
from pyro_dvae.infer import exact_log_likelihood
from pyro_dvae.utils.options import HelpFormatter

if "ipykernel" not in sys.modules:  # a notebook keeps its inline figures
    plt.switch_backend("Agg")
smoke_test = "CI" in os.environ


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Tutorial 1: discrete latent variables and the exact log p(x) by summing over every "
            "code, on a synthetic categorical model; how its cost grows with the number of latent "
            "groups."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--out", default="runs/tutorials/01_latent_variables", help="directory for the figures"
    )
    p.add_argument("--groups", type=int, default=3, help="latent groups N of the synthetic model")
    p.add_argument("--categories", type=int, default=4, help="categories K per group")
    p.add_argument(
        "--data-dim",
        type=int,
        default=64 if not smoke_test else 16,
        help="pixels D of each datum; smaller with CI set",
    )
    p.add_argument(
        "--num-data",
        type=int,
        default=100 if not smoke_test else 20,
        help="data points sampled from the model; smaller with CI set",
    )
    p.add_argument(
        "--max-groups",
        type=int,
        default=8 if not smoke_test else 6,
        help="largest N in the timing of exact log p(x); smaller with CI set",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=3 if not smoke_test else 1,
        help="timings per N, the best kept; smaller with CI set",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the model and the data")
    if "ipykernel" in sys.modules:  # a notebook kernel passes flags of its own
        return p.parse_known_args(argv)[0]
    return p.parse_args(argv)


def save(fig, name: str) -> None:
    """Save a figure under ``--out`` (on the documentation page it appears below the cell)."""
    fig.tight_layout()
    fig.savefig(out / f"{name}.png", dpi=100)


if __name__ == "__main__":  # a script, a notebook or a documentation page; main(args) below
    args = parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
pyro.set_rng_seed(args.seed)
generator = torch.Generator().manual_seed(args.seed)

# %%
# The model
# ---------
# The latent code has :math:`N` independent categorical groups of :math:`K` classes each, written
# as one-hot vectors :math:`z_g \in \{e_1, \dots, e_K\}`, and the data are :math:`D` binary
# pixels whose logits add up one weight vector per group:
#
# .. math::
#
#    z_g \sim \mathrm{Categorical}(\pi_g), \quad g = 1, \dots, N, \qquad
#    x_d \mid z \sim \mathrm{Bernoulli}\Big(\sigma\big(b_d + \textstyle\sum_g
#    W_{g, z_g, d}\big)\Big), \quad d = 1, \dots, D.
#
# :class:`~pyro_dvae.data.SyntheticModel` holds random parameters :math:`(\pi, W, b)` and samples
# data from them; ``make_model`` writes the same model in Pyro. One ``sample`` site holds all
# :math:`N` groups (``.to_event(1)``), and the einsum broadcasts over leading dimensions, so the
# enumeration engine can add a dimension of latent configurations on the left.


def make_model(true: SyntheticModel):
    """A Pyro model whose parameters are those of ``true`` (float32 copies)."""
    prior_logits = true.prior_logits.float()  # [N, K]
    weights = true.weights.float()  # [N, K, D]
    bias = true.bias.float()  # [D]

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior_logits).to_event(1))
            logits = bias + torch.einsum("...nk,nkd->...d", z, weights)  # z: [..., N, K]
            pyro.sample("x", BernoulliVector(logits), obs=x)

    return model


true = SyntheticModel.random(args.groups, args.categories, args.data_dim, seed=args.seed)
x, z = true.sample(args.num_data, generator)
model = make_model(true)
print(
    f"model: N={args.groups} groups x K={args.categories} classes "
    f"({true.num_configurations} codes), D={args.data_dim} pixels, {args.num_data} data"
)

# %%
# The exact marginal likelihood
# -----------------------------
# With :math:`K^N` codes the sum over :math:`z` is a finite log-sum-exp,
#
# .. math::
#
#    \log p(x) = \log \sum_{z} \exp\big(\log p(x \mid z) + \log p(z)\big),
#
# which :func:`~pyro_dvae.infer.exact_log_likelihood` computes from the Pyro model alone, by
# enumerating the ``z`` site. :meth:`~pyro_dvae.data.SyntheticModel.log_likelihood` computes the
# same sum independently, in float64, from the parameters; the two must agree to float32
# round-off.

log_px = exact_log_likelihood(model, x)
reference = true.log_likelihood(x)
max_err = float((log_px.double() - reference).abs().max())
print(
    f"exact mean log p(x) = {float(log_px.mean()):.4f} nats/datum "
    f"(float64 brute force: {float(reference.mean()):.4f}; max |diff| = {max_err:.2e})"
)
for i in range(min(3, args.num_data)):
    print(f"  datum {i}: true code z={z[i].tolist()}, log p(x) = {float(log_px[i]):.4f}")
assert max_err < 1e-3, max_err

# %%
# The same sum also gives the exact **posterior** over codes, :math:`p(z \mid x) = p(x, z) /
# p(x)`: how much each code explains a datum. With enough pixels it concentrates on a few codes,
# usually including the one that generated the datum (marked in red). This is what a variational
# posterior :math:`q(z \mid x)` will have to learn in the later tutorials.

posterior = true.posterior(x)  # [num_data, K^N], float64: p(z | x) for every code
true_indices = true.config_index(z)  # the generating code's index
fig, axes = plt.subplots(1, 3, figsize=(10, 2.6), sharey=True)
for i, ax in enumerate(axes):
    true_index = int(true_indices[i])
    ax.bar(range(true.num_configurations), posterior[i].tolist(), width=1.0, color="C0")
    ax.bar([true_index], [float(posterior[i, true_index])], width=1.0, color="C3")
    ax.set_title(f"datum {i}: true code {z[i].tolist()}", fontsize=9)
    ax.set_xlabel("code index")
axes[0].set_ylabel("p(z | x)")
save(fig, "01_exact_posterior")

# %%
# The cost of exactness
# ---------------------
# The sum has :math:`K^N` terms: exponential in the number of latent groups. We time
# ``exact_log_likelihood`` for :math:`N = 1, 2, \dots` and fit the growth factor per extra group
# over the largest sizes; once there are enough configurations that the fixed per-call overhead
# no longer dominates, it approaches the factor :math:`K`. This is why the later tutorials need
# estimators that *sample* :math:`z` instead of summing over it.


def time_call(fn, repeats: int) -> float:
    """Best-of-``repeats`` wall time of ``fn()`` in seconds."""
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


print(
    f"timing exact_log_likelihood, K={args.categories}, D={args.data_dim}, "
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
tail = rows[-3:]  # growth over the last three sizes, where the K^N work dominates
slope = (math.log(tail[-1][2]) - math.log(tail[0][2])) / (tail[-1][0] - tail[0][0])
growth_factor = math.exp(slope)
print(
    f"time grows by x{growth_factor:.2f} per extra group over N={tail[0][0]}..{tail[-1][0]} "
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
save(fig, "01_exact_marginalization_time")
print(f"figures: {out}/01_*.png")

# %%
# Running it from Python
# ----------------------
# ``python tutorials/01_latent_variables.py --help`` lists the options. From Python,
# ``main(args)`` runs this file with the given arguments and returns its variables (``log_px``,
# ``rows``, ``growth_factor``, ...).


def main(args: argparse.Namespace) -> dict:
    """Run this tutorial with ``args`` (as from :func:`parse_args`); returns its variables."""
    return runpy.run_path(__file__, init_globals={"args": args})
