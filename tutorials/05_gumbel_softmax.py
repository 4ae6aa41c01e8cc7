r"""Tutorial 5: the Gumbel-max trick and the Gumbel-softmax (Concrete) relaxation
===============================================================================

Tutorial 4 showed why we want pathwise gradients, and that a discrete :math:`z` has none: a
categorical sample is a step function of the parameters. This tutorial builds the standard way
around it in three measured steps:

1. **Gumbel-max**: a categorical sample *is* an argmax of perturbed logits, so sampling can be
   written as a deterministic function of the logits and parameter-free noise;
2. **Gumbel-softmax** (Concrete): replace that argmax by a softmax at temperature :math:`\tau`,
   which is differentiable, and look at what the samples become as :math:`\tau` changes;
3. the price: the relaxed gradient is **biased**, with a bias that shrinks as
   :math:`\tau \to 0` while the variance grows.
"""

# %%
# Setup
# -----
# Sizes are command-line options (``--help``); ``CI`` set shrinks them (smoke mode).

import argparse
import os
import runpy
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import torch

from pyro_dvae.diagnostics import compare_gradients
from pyro_dvae.distributions import (
    ConcreteOneHotCategorical,
    StraightThroughOneHotCategorical,
)
from pyro_dvae.utils.options import HelpFormatter

if "ipykernel" not in sys.modules:  # a notebook keeps its inline figures
    plt.switch_backend("Agg")
smoke_test = "CI" in os.environ


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Tutorial 5: Gumbel-max sampling and the Gumbel-softmax (Concrete) relaxation: exact "
            "samples, relaxed samples across temperatures, and the bias and variance of their "
            "gradients."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--out", default="runs/tutorials/05_gumbel_softmax", help="directory for the figures"
    )
    p.add_argument(
        "--probs",
        type=float,
        nargs="+",
        default=[0.4, 0.25, 0.15, 0.1, 0.07, 0.03],
        help="class probabilities of the categorical, space separated",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=100_000 if not smoke_test else 20_000,
        help="samples per sampler in the distribution checks; smaller with CI set",
    )
    p.add_argument(
        "--gradient-samples",
        type=int,
        default=20_000 if not smoke_test else 5000,
        help="single-sample gradient estimates per temperature; smaller with CI set",
    )
    p.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=[0.1, 0.25, 0.5, 1.0, 2.0, 5.0] if not smoke_test else [0.1, 0.5, 2.0],
        help="temperatures tau of the relaxation, space separated; smaller with CI set",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed")
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
probs = torch.tensor(args.probs, dtype=torch.float64)
logits = (probs / probs.sum()).log()
probs = logits.softmax(-1)
k = len(logits)

# %%
# Gumbel-max
# ----------
# With i.i.d. standard Gumbel noise :math:`g_k = -\log(-\log u_k)`, :math:`u_k \sim
# \mathrm{Uniform}(0, 1)`,
#
# .. math::
#
#    \operatorname*{argmax}_k \,(\ell_k + g_k) \;\sim\; \mathrm{Categorical}\big(
#    \mathrm{softmax}(\ell)\big).
#
# We check it with Pearson's chi-square goodness-of-fit test, :math:`X^2 = \sum_k (O_k -
# E_k)^2 / E_k` with :math:`K - 1` degrees of freedom and p-value :math:`P(\chi^2_{K-1} \ge
# X^2)`, on three samplers: the trick written by hand, the library's straight-through sampler
# (whose forward value is a Gumbel-max one-hot sample), and, as a negative control that shows
# the test has power, Gaussian instead of Gumbel noise, which does *not* give the categorical
# distribution.


def chi_square_test(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    """Pearson's X^2 statistic and its p-value with ``K - 1`` degrees of freedom."""
    expected = probs * counts.sum()
    stat = ((counts - expected) ** 2 / expected).sum()
    chi2 = torch.distributions.Chi2(torch.tensor(float(len(probs) - 1), dtype=torch.float64))
    return float(stat), float(1 - chi2.cdf(stat.double()))


def gumbel(shape) -> torch.Tensor:
    u = torch.rand(shape, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return -torch.log(-torch.log(u))


n = args.samples
methods = {
    "Gumbel-max (by hand)": (logits + gumbel((n, k))).argmax(-1),
    "library ST sampler": StraightThroughOneHotCategorical(1.0, logits=logits)
    .rsample((n,))
    .argmax(-1),
    "Gaussian noise (wrong)": (logits + torch.randn(n, k, dtype=torch.float64)).argmax(-1),
}
print(f"{n} samples, K={k}, probabilities {[round(float(p), 3) for p in probs]}")
print(f"{'method':>24} {'X^2':>9} {'p-value':>9}   frequencies")
gumbel_max = {}
for name, index in methods.items():
    counts = torch.bincount(index, minlength=k).double()
    stat, pval = chi_square_test(counts, probs)
    gumbel_max[name] = (counts / n, stat, pval)
    freqs = " ".join(f"{float(f):.3f}" for f in counts / n)
    print(f"{name:>24} {stat:>9.2f} {pval:>9.4f}   {freqs}")
print(f"(df = {k - 1}; a p-value far below 0.05 rejects 'these are categorical samples')")
assert gumbel_max["Gaussian noise (wrong)"][2] < 1e-6  # the test has power
assert min(gumbel_max[m][2] for m in ("Gumbel-max (by hand)", "library ST sampler")) > 1e-4

fig, ax = plt.subplots(figsize=(6, 3.5))
width = 0.25
ax.bar([i - width for i in range(k)], probs.tolist(), width, label="softmax(logits)", color="k")
for j, name in enumerate(["Gumbel-max (by hand)", "Gaussian noise (wrong)"]):
    freq, _, pval = gumbel_max[name]
    ax.bar([i + j * width for i in range(k)], freq.tolist(), width, label=f"{name}, p={pval:.2g}")
ax.set_xlabel("class k")
ax.set_ylabel("frequency")
ax.set_title(f"Gumbel-max sampling, {n} samples")
ax.legend(fontsize=8)
save(fig, "05_gumbel_max")

# %%
# Gumbel-softmax samples against temperature
# ------------------------------------------
# The argmax has zero gradient almost everywhere. The **Concrete** or **Gumbel-softmax**
# distribution (:class:`~pyro_dvae.distributions.ConcreteOneHotCategorical`) replaces it by a
# tempered softmax,
#
# .. math::
#
#    y = \mathrm{softmax}\big((\ell + g) / \tau\big),
#
# a point inside the probability simplex that is a differentiable function of :math:`\ell`. Its
# argmax is still a Gumbel-max sample at any :math:`\tau` (the chi-square column). As
# :math:`\tau \to 0` the samples approach one-hot vectors (the mean of :math:`\max_k y_k` tends to
# 1) and :math:`\mathbb{E}[y]` approaches the probabilities; as :math:`\tau` grows they shrink
# towards the centre :math:`1/K`.

print(f"Gumbel-softmax samples, {n} per temperature")
print(f"{'tau':>6} {'mean max_k y_k':>15} {'||E[y] - p||_1':>15} {'argmax = Gumbel-max':>20}")
samples = []
for tau in args.temperatures:
    y = ConcreteOneHotCategorical(tau, logits=logits).rsample((n,))
    counts = torch.bincount(y.argmax(-1), minlength=k).double()
    _, pval = chi_square_test(counts, probs)  # argmax of y is a Gumbel-max sample at any tau
    samples.append(
        (tau, float(y.max(-1).values.mean()), float((y.mean(0) - probs).abs().sum()), pval)
    )
    print(f"{tau:>6} {samples[-1][1]:>15.3f} {samples[-1][2]:>15.3f} {f'p = {pval:.3f}':>20}")

# %%
# With three classes the simplex is a triangle, and the samples can be seen: at
# :math:`\tau = 0.1` they sit in the corners (nearly one-hot), at :math:`\tau = 2` they gather
# in the middle.

corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.866]], dtype=torch.float64)
three = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64).log()
taus = (0.1, 0.5, 2.0)
fig, axes = plt.subplots(1, len(taus), figsize=(10, 3.2))
for ax, tau in zip(axes, taus):
    y = ConcreteOneHotCategorical(tau, logits=three).rsample((1000,))
    xy = y @ corners
    ax.scatter(xy[:, 0], xy[:, 1], s=3, alpha=0.4)
    ax.plot([0, 1, 0.5, 0], [0, 0, 0.866, 0], "k-", lw=0.8)
    for (cx, cy), label in zip(corners.tolist(), ["p=.6", "p=.3", "p=.1"]):
        ax.annotate(label, (cx, cy), textcoords="offset points", xytext=(0, -12 if cy == 0 else 4))
    ax.set_aspect("equal")
    ax.set_title(f"tau = {tau}")
    ax.axis("off")
fig.suptitle("Concrete samples on the 3-class simplex")
save(fig, "05_simplex")

# %%
# The bias-variance trade-off of the relaxed gradient
# ---------------------------------------------------
# Take :math:`f(z) = (c \cdot z - t)^2`. The discrete objective :math:`J = \sum_k p_k f(e_k)`
# has an exact gradient with respect to the logits. The relaxed pathwise estimator
# :math:`\nabla_\ell f(y)` differentiates a *different* objective, :math:`\mathbb{E}[f(y)]`, so
# it is biased, by an amount that shrinks as :math:`\tau \to 0` while its variance grows (the
# softmax gets steeper). The **straight-through** estimator
# (:class:`~pyro_dvae.distributions.StraightThroughOneHotCategorical`: one-hot forward, relaxed
# backward) shows the same trade-off, with a higher variance here at every :math:`\tau`. Bias
# (with its Monte Carlo standard error), variance and cosine to the exact gradient come from
# :func:`~pyro_dvae.diagnostics.compare_gradients`.

c = torch.linspace(-1.0, 2.0, k, dtype=torch.float64)
target = 0.5


def f(z):
    return ((z * c).sum(-1) - target) ** 2


# exact gradient of the discrete objective J = sum_k p_k f(e_k) w.r.t. the logits
exact_logits = logits.clone().requires_grad_(True)
(exact,) = torch.autograd.grad(
    (exact_logits.softmax(-1) * f(torch.eye(k, dtype=c.dtype))).sum(), exact_logits
)
m = args.gradient_samples
print(
    f"gradient of E[f(z)], f(z) = (c.z - {target})^2, w.r.t. the logits; "
    f"{m} single-sample estimates;\nexact gradient norm {float(exact.norm()):.4f}"
)
print(f"{'tau':>6} {'estimator':>16} {'bias':>8} {'bias se':>8} {'variance':>10} {'cosine':>7}")
gradients = []
for tau in args.temperatures:
    for name, cls in (
        ("Gumbel-softmax", ConcreteOneHotCategorical),
        ("straight-through", StraightThroughOneHotCategorical),
    ):
        per_sample = logits.expand(m, k).clone().requires_grad_(True)  # one copy per sample
        y = cls(tau, logits=per_sample).rsample()
        (grads,) = torch.autograd.grad(f(y).sum(), per_sample)
        d = compare_gradients({"logits": grads}, {"logits": exact})["logits"]
        gradients.append((tau, name, d.bias, d.bias_se, d.variance, d.cosine))
        print(
            f"{tau:>6} {name:>16} {d.bias:>8.4f} {d.bias_se:>8.4f} {d.variance:>10.4f} "
            f"{d.cosine:>7.3f}"
        )
print("(bias well above 'bias se' = a real bias, not Monte Carlo noise)")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharex=True)
for name, marker in (("Gumbel-softmax", "o-"), ("straight-through", "s-")):
    pts = [r for r in gradients if r[1] == name]
    taus_ = [r[0] for r in pts]
    axes[0].errorbar(
        taus_, [r[2] for r in pts], yerr=[2 * r[3] for r in pts], fmt=marker, label=name
    )
    axes[1].loglog(taus_, [r[4] for r in pts], marker, label=name)
axes[0].set_xscale("log")
axes[0].set_xlabel("temperature tau")
axes[0].set_ylabel("||mean estimate - exact||")
axes[0].set_title("Bias (error bars: 2 standard errors)")
axes[0].legend(fontsize=8)
axes[1].set_xlabel("temperature tau")
axes[1].set_ylabel("variance (sum over logits)")
axes[1].set_title("Variance")
axes[1].legend(fontsize=8)
save(fig, "05_bias_variance")
print(f"figures: {out}/05_*.png")

# %%
# Running it from Python
# ----------------------
# ``python tutorials/05_gumbel_softmax.py --help`` lists the options. From Python,
# ``main(args)`` runs this file with the given arguments and returns its variables
# (``gumbel_max``, ``samples``, ``gradients``, ...).


def main(args: argparse.Namespace) -> dict:
    """Run this tutorial with ``args`` (as from :func:`parse_args`); returns its variables."""
    return runpy.run_path(__file__, init_globals={"args": args})
