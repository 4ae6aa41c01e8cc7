"""Tutorial 5: the Gumbel-max trick, and the Gumbel-softmax (Concrete) relaxation vs temperature.

What it shows (measured):

* **Gumbel-max**: with ``g_k = -log(-log u_k)``, ``u_k ~ Uniform(0, 1)`` i.i.d., the index
  ``argmax_k (logits_k + g_k)`` is distributed as ``Categorical(softmax(logits))``. The script
  draws many samples and runs Pearson's chi-square goodness-of-fit test,
  ``X^2 = sum_k (O_k - E_k)^2 / E_k`` with ``K - 1`` degrees of freedom; the p-value
  ``P(Chi2_{K-1} >= X^2)`` is computed with ``torch.distributions.Chi2(K - 1).cdf``. It tests the
  hand-written trick, the library's straight-through sampler (whose forward value is a
  Gumbel-max one-hot sample), and, as a negative control that shows the test has power, Gaussian
  instead of Gumbel noise (which does *not* give the categorical distribution).
* **Gumbel-softmax**: ``y = softmax((logits + g) / tau)`` is a point inside the simplex
  (:class:`pyro_dvae.distributions.ConcreteOneHotCategorical`). As ``tau -> 0`` samples approach
  one-hot vectors (mean of ``max_k y_k`` -> 1) and ``E[y]`` approaches the probabilities; as
  ``tau`` grows they shrink towards the centre ``1/K``.
* **Gradients vs tau**: for ``f(z) = (c . z - t)^2`` the discrete objective is
  ``J = sum_k p_k f(e_k)`` with an exact gradient w.r.t. the logits. The relaxed pathwise
  estimator ``grad f(y)`` is biased (it differentiates a different objective) with a bias that
  shrinks as ``tau -> 0`` while its variance grows. The straight-through estimator (one-hot
  forward, relaxed backward; :class:`pyro_dvae.distributions.StraightThroughOneHotCategorical`)
  shows the same trade-off, with a higher variance here at every ``tau``. Bias (with its Monte
  Carlo standard error), variance and cosine to the exact gradient are computed with
  :func:`pyro_dvae.diagnostics.compare_gradients`.

Run ``python tutorials/05_gumbel_softmax.py`` (add ``--out DIR`` for the figures).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from pyro_dvae.diagnostics import compare_gradients  # noqa: E402
from pyro_dvae.distributions import (  # noqa: E402
    ConcreteOneHotCategorical,
    StraightThroughOneHotCategorical,
)

smoke_test = "CI" in os.environ


def chi_square_test(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    """Pearson's X^2 statistic and its p-value with ``K - 1`` degrees of freedom."""
    expected = probs * counts.sum()
    stat = ((counts - expected) ** 2 / expected).sum()
    chi2 = torch.distributions.Chi2(torch.tensor(float(len(probs) - 1), dtype=torch.float64))
    return float(stat), float(1 - chi2.cdf(stat.double()))


def gumbel(shape) -> torch.Tensor:
    u = torch.rand(shape, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    return -torch.log(-torch.log(u))


def part_a(args, logits: torch.Tensor) -> dict:
    n, k = args.samples, len(logits)
    probs = logits.softmax(-1)
    methods = {
        "Gumbel-max (by hand)": (logits + gumbel((n, k))).argmax(-1),
        "library ST sampler": StraightThroughOneHotCategorical(1.0, logits=logits)
        .rsample((n,))
        .argmax(-1),
        "Gaussian noise (wrong)": (logits + torch.randn(n, k, dtype=torch.float64)).argmax(-1),
    }
    print(f"Part A: {n} samples, K={k}, probabilities {[round(float(p), 3) for p in probs]}")
    print(f"{'method':>24} {'X^2':>9} {'p-value':>9}   frequencies")
    results = {}
    for name, index in methods.items():
        counts = torch.bincount(index, minlength=k).double()
        stat, pval = chi_square_test(counts, probs)
        results[name] = (counts / n, stat, pval)
        freqs = " ".join(f"{float(f):.3f}" for f in counts / n)
        print(f"{name:>24} {stat:>9.2f} {pval:>9.4f}   {freqs}")
    print(f"(df = {k - 1}; a p-value far below 0.05 rejects 'these are categorical samples')")
    return results


def part_b(args, logits: torch.Tensor) -> list[tuple]:
    probs = logits.softmax(-1)
    n = args.samples
    print(f"\nPart B: Gumbel-softmax samples, {n} per temperature")
    print(f"{'tau':>6} {'mean max_k y_k':>15} {'||E[y] - p||_1':>15} {'argmax = Gumbel-max':>20}")
    rows = []
    for tau in args.temperatures:
        y = ConcreteOneHotCategorical(tau, logits=logits).rsample((n,))
        counts = torch.bincount(y.argmax(-1), minlength=len(logits)).double()
        _, pval = chi_square_test(counts, probs)  # argmax of y is a Gumbel-max sample at any tau
        rows.append(
            (tau, float(y.max(-1).values.mean()), float((y.mean(0) - probs).abs().sum()), pval)
        )
        print(f"{tau:>6} {rows[-1][1]:>15.3f} {rows[-1][2]:>15.3f} {'p = ' + f'{pval:.3f}':>20}")
    return rows


def part_c(args, logits: torch.Tensor) -> list[tuple]:
    k = len(logits)
    c = torch.linspace(-1.0, 2.0, k, dtype=torch.float64)
    t = 0.5

    def f(z):
        return ((z * c).sum(-1) - t) ** 2

    # exact gradient of the discrete objective J = sum_k p_k f(e_k) w.r.t. the logits
    exact_logits = logits.clone().requires_grad_(True)
    (exact,) = torch.autograd.grad(
        (exact_logits.softmax(-1) * f(torch.eye(k, dtype=c.dtype))).sum(), exact_logits
    )
    n = args.gradient_samples
    print(
        f"\nPart C: gradient of E[f(z)], f(z) = (c.z - {t})^2, w.r.t. the logits; "
        f"{n} single-sample estimates; exact gradient norm {float(exact.norm()):.4f}"
    )
    print(f"{'tau':>6} {'estimator':>16} {'bias':>8} {'bias se':>8} {'variance':>10} {'cosine':>7}")
    rows = []
    for tau in args.temperatures:
        for name, cls in (
            ("Gumbel-softmax", ConcreteOneHotCategorical),
            ("straight-through", StraightThroughOneHotCategorical),
        ):
            per_sample = logits.expand(n, k).clone().requires_grad_(True)  # one copy per sample
            y = cls(tau, logits=per_sample).rsample()
            (grads,) = torch.autograd.grad(f(y).sum(), per_sample)
            d = compare_gradients({"logits": grads}, {"logits": exact})["logits"]
            rows.append((tau, name, d.bias, d.bias_se, d.variance, d.cosine))
            print(
                f"{tau:>6} {name:>16} {d.bias:>8.4f} {d.bias_se:>8.4f} {d.variance:>10.4f} "
                f"{d.cosine:>7.3f}"
            )
    print("(bias well above 'bias se' = a real bias, not Monte Carlo noise)")
    return rows


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    probs = torch.tensor(args.probs, dtype=torch.float64)
    logits = (probs / probs.sum()).log()
    a = part_a(args, logits)
    b = part_b(args, logits)
    grads = part_c(args, logits)

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    k = len(logits)
    width = 0.25
    axes[0].bar(
        [i - width for i in range(k)], logits.softmax(-1).tolist(), width, label="softmax(logits)"
    )
    for j, name in enumerate(["Gumbel-max (by hand)", "Gaussian noise (wrong)"]):
        freq, _, pval = a[name]
        axes[0].bar(
            [i + j * width for i in range(k)], freq.tolist(), width, label=f"{name}, p={pval:.2g}"
        )
    axes[0].set_xlabel("class k")
    axes[0].set_ylabel("frequency")
    axes[0].set_title("Gumbel-max sampling")
    axes[0].legend(fontsize=7)
    # 3-class Concrete samples on the simplex (barycentric -> 2-D)
    corners = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, 0.866]], dtype=torch.float64)
    three = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64).log()
    for tau in (0.1, 0.5, 2.0):
        y = ConcreteOneHotCategorical(tau, logits=three).rsample((300,))
        xy = y @ corners
        axes[1].scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.5, label=f"tau={tau}")
    axes[1].plot([0, 1, 0.5, 0], [0, 0, 0.866, 0], "k-", lw=0.8)
    axes[1].set_aspect("equal")
    axes[1].set_title("Concrete samples (K=3, p=.6/.3/.1)")
    axes[1].legend(fontsize=7, markerscale=3)
    axes[1].axis("off")
    for name, marker in (("Gumbel-softmax", "o-"), ("straight-through", "s-")):
        pts = [(r[0], r[2], r[4]) for r in grads if r[1] == name]
        axes[2].loglog([p[0] for p in pts], [p[1] for p in pts], marker, label=f"{name} bias")
        axes[2].loglog(
            [p[0] for p in pts], [p[2] for p in pts], marker, alpha=0.5, label=f"{name} variance"
        )
    axes[2].set_xlabel("temperature tau")
    axes[2].set_title("Gradient bias and variance")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "05_gumbel_softmax.png", dpi=100)
    plt.close(fig)
    print(f"figure: {out / '05_gumbel_softmax.png'}")
    return {
        "gumbel_max": {n: (s, p) for n, (_, s, p) in a.items()},
        "samples": b,
        "gradients": grads,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tutorials/05_gumbel_softmax")
    p.add_argument("--probs", type=float, nargs="+", default=[0.4, 0.25, 0.15, 0.1, 0.07, 0.03])
    p.add_argument("--samples", type=int, default=100_000 if not smoke_test else 20_000)
    p.add_argument("--gradient-samples", type=int, default=20_000 if not smoke_test else 5000)
    p.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=[0.1, 0.25, 0.5, 1.0, 2.0, 5.0] if not smoke_test else [0.1, 0.5, 2.0],
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
