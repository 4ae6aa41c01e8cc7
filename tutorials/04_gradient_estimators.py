r"""Tutorial 4: gradient estimators, score function vs pathwise
=============================================================

Fitting :math:`q_\phi(z \mid x)` means following the gradient of an expectation *under*
:math:`q_\phi`, :math:`\nabla_\phi \mathbb{E}_{q_\phi(z)}[f(z)]`; the sampling distribution
itself depends on :math:`\phi`, so we cannot simply differentiate a sample. Two unbiased
single-sample estimators exist:

* the **score function** (REINFORCE, likelihood ratio) estimator, from
  :math:`\nabla_\phi q_\phi = q_\phi \nabla_\phi \log q_\phi`:

  .. math:: \hat g_{\mathrm{SF}} = f(z)\, \nabla_\phi \log q_\phi(z), \qquad z \sim q_\phi.

  It needs only :math:`\log q`, so it works for discrete :math:`z`;
* the **pathwise** (reparameterization) estimator: write :math:`z = \mu + \sigma
  \varepsilon` with :math:`\varepsilon \sim \mathcal{N}(0, 1)`, so the randomness no longer
  depends on :math:`\phi`, and differentiate through the sample:

  .. math:: \hat g_{\mathrm{PW}} = \nabla_\phi f(\mu + \sigma \varepsilon).

  It needs a differentiable :math:`f` and a reparameterizable :math:`q`, which a discrete
  :math:`z` is not (tutorial 5's Gumbel-softmax works around that).

Both have the right mean; this tutorial measures their variances, first by hand on a Gaussian,
then through Pyro's inference machinery on an ELBO. Every mean is compared with the closed-form
gradient.
"""

# %%
# Setup
# -----
# Sizes are command-line options (``--help``); ``CI`` set shrinks them (smoke mode).

import argparse
import math
import os
import runpy
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO

from pyro_dvae.diagnostics import compare_gradients, gradient_estimates
from pyro_dvae.infer import ScoreFunctionELBO
from pyro_dvae.utils.options import HelpFormatter

if "ipykernel" not in sys.modules:  # a notebook keeps its inline figures
    plt.switch_backend("Agg")
smoke_test = "CI" in os.environ


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Tutorial 4: score-function (REINFORCE) against pathwise (reparameterization) "
            "gradients: their variances by hand on a Gaussian and through Pyro's ELBOs."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--out", default="runs/tutorials/04_gradient_estimators", help="directory for the figures"
    )
    p.add_argument("--target", type=float, default=3.0, help="c in f(z) = (z - c)^2")
    p.add_argument(
        "--sigmas",
        type=float,
        nargs="+",
        default=[1.0, 0.3, 0.1],
        help="scales sigma of q = Normal(mu, sigma) in the by-hand part, space separated",
    )
    p.add_argument(
        "--hand-samples",
        type=int,
        default=100_000 if not smoke_test else 10_000,
        help="single-sample estimates per sigma in the by-hand part; smaller with CI set",
    )
    p.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=[1, 10, 100] if not smoke_test else [1, 10],
        help="latent dimensions D of the ELBO part, space separated; smaller with CI set",
    )
    p.add_argument(
        "--samples",
        type=int,
        default=1000 if not smoke_test else 100,
        help="gradient estimates per estimator and D in the ELBO part; smaller with CI set",
    )
    p.add_argument(
        "--warmup",
        type=int,
        default=100 if not smoke_test else 20,
        help="calls that settle the moving-average baseline before measuring; smaller with CI set",
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

# %%
# Part A: both estimators by hand
# -------------------------------
# Take :math:`q = \mathcal{N}(\mu, \sigma)` and :math:`f(z) = (z - c)^2`, so that
# :math:`\mathbb{E}_q[f] = (\mu - c)^2 + \sigma^2` and the exact gradient is
# :math:`\partial_\mu \mathbb{E}_q[f] = 2 (\mu - c)`. With one copy of :math:`\mu` per
# sample, a single ``autograd.grad`` call returns every per-sample estimate at once:
#
# .. math::
#
#    \hat g_{\mathrm{PW}} = 2 (\mu + \sigma\varepsilon - c), \qquad
#    \hat g_{\mathrm{SF}} = (z - c)^2 \, \frac{z - \mu}{\sigma^2}.
#
# The score function's :math:`\nabla \log q` term scales like :math:`1 / \sigma`, so its
# variance *grows* as :math:`q` sharpens, while the pathwise variance shrinks with it.

c, mu0, n = args.target, 0.0, args.hand_samples
print(
    f"d/dmu E_q[(z - {c})^2] at mu = {mu0}, exact = {2 * (mu0 - c):.3f}; "
    f"{n} single-sample estimates each"
)
print(f"{'sigma':>6} {'estimator':>15} {'mean':>9} {'variance':>11}")
by_hand = []
for sigma in args.sigmas:
    mu = torch.full((n,), mu0, requires_grad=True)
    z = mu + sigma * torch.randn(n)  # pathwise: z = mu + sigma * eps, eps ~ Normal(0, 1)
    f = (z - c) ** 2
    (per_sample_path,) = torch.autograd.grad(f.sum(), mu, retain_graph=True)
    # score function: f(z) * d/dmu log q(z), the sample z held fixed (no gradient through it)
    log_q = dist.Normal(mu, sigma).log_prob(z.detach())
    (per_sample_sf,) = torch.autograd.grad((f.detach() * log_q).sum(), mu)
    for name, g in (("pathwise", per_sample_path), ("score function", per_sample_sf)):
        by_hand.append((sigma, name, float(g.mean()), float(g.var()), g))
        print(f"{sigma:>6} {name:>15} {by_hand[-1][2]:>9.3f} {by_hand[-1][3]:>11.2f}")
        # unbiased: the mean is within 5 standard errors of the exact gradient
        assert abs(float(g.mean()) - 2 * (mu0 - c)) < 5 * math.sqrt(float(g.var()) / n)

# %%
# The histograms of the single-sample estimates at the smallest :math:`\sigma` show what the
# variances mean: both are centred on the exact gradient (dashed), but the score function's
# spread is orders of magnitude wider. On the right, the variances against :math:`\sigma`.

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
sigma_min = min(args.sigmas)
estimates = {name: g for sigma, name, _, _, g in by_hand if sigma == sigma_min}
# common bins over the score function's 99% range: the pathwise estimates all fall in one or two
lo, hi = torch.quantile(estimates["score function"][:10000], torch.tensor([0.005, 0.995]))
bins = torch.linspace(float(lo), float(hi), 121).tolist()
for name, color in (("score function", "C1"), ("pathwise", "C0")):
    g = estimates[name].clamp(float(lo), float(hi))
    axes[0].hist(g.tolist(), bins=bins, alpha=0.7, density=True, label=name, color=color)
axes[0].axvline(2 * (mu0 - c), color="k", ls="--", lw=1, label="exact")
axes[0].set_yscale("log")
axes[0].set_xlabel(f"single-sample estimate of d/dmu (sigma = {sigma_min})")
axes[0].set_ylabel("density")
axes[0].set_title("Estimates (clipped to their 99% range)")
axes[0].legend(fontsize=8)
for name, marker in (("pathwise", "o-"), ("score function", "s-")):
    pts = [(r[0], r[3]) for r in by_hand if r[1] == name]
    axes[1].loglog([p[0] for p in pts], [p[1] for p in pts], marker, label=name)
axes[1].set_xlabel("sigma")
axes[1].set_ylabel("variance of d/dmu estimate")
axes[1].set_title("Part A: E[(z - c)^2]")
axes[1].legend()
save(fig, "04_by_hand")

# %%
# Part B: the same comparison through Pyro, on an ELBO
# ----------------------------------------------------
# A conjugate Gaussian model of dimension :math:`D`: prior :math:`z \sim \mathcal{N}(0, I_D)`,
# likelihood :math:`x \sim \mathcal{N}(z, I_D)`, guide :math:`q = \mathcal{N}(\ell,
# e^{s})` with :math:`\ell = 0.5`, :math:`s = \log 0.5` and :math:`x = 2`. The loss
# :math:`-\mathrm{ELBO}` has the exact gradients :math:`2\ell - x` and :math:`2 e^{2s} - 1`,
# i.e. :math:`-1` and :math:`-0.5` per coordinate.
#
# * pathwise: ``pyro.infer.Trace_ELBO`` (Pyro reparameterizes the Normal);
# * score function: :class:`~pyro_dvae.infer.ScoreFunctionELBO` with the guide's Normal marked
#   non-reparameterizable (``has_rsample_(False)``), without and with a decaying-average
#   baseline :math:`b` (the estimator becomes :math:`(f(z) - b) \nabla \log q`, still unbiased
#   because :math:`\mathbb{E}_q[\nabla \log q] = 0`).
#
# :func:`~pyro_dvae.diagnostics.gradient_estimates` draws the single-sample gradients and
# :func:`~pyro_dvae.diagnostics.compare_gradients` compares their mean with the exact one
# (``bias/se``: the norm of the mean error over its standard error, of order 1 for an unbiased
# estimator). As :math:`D` grows, the whole cost :math:`f(z)` multiplies *every* coordinate's
# score, so the score-function variance of one coordinate grows with :math:`D`; the pathwise
# variance does not.


def elbo_problem(d: int, reparameterized: bool):
    """Model, guide and datum of Part B (a conjugate Gaussian model of dimension ``d``)."""
    x = torch.full((d,), 2.0)

    def model(x):
        z = pyro.sample("z", dist.Normal(torch.zeros(d), 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.full((d,), 0.5))
        log_scale = pyro.param("log_scale", torch.full((d,), math.log(0.5)))
        q = dist.Normal(loc, log_scale.exp())
        if not reparameterized:
            q = q.has_rsample_(False)  # Pyro then uses the score-function estimator for z
        pyro.sample("z", q.to_event(1))

    # exact gradient of the loss -ELBO at the initial parameters
    exact = {"loc": 2 * 0.5 - x, "log_scale": torch.full((d,), 2 * 0.25 - 1.0)}
    return model, guide, x, exact


estimators = {
    "pathwise": (lambda: Trace_ELBO(), True),
    "score function": (lambda: ScoreFunctionELBO(baseline="none"), False),
    "SF + avg baseline": (lambda: ScoreFunctionELBO(baseline="decaying_average"), False),
}
print(
    f"gradient of -ELBO, Gaussian latent of dimension D, {args.samples} "
    "single-sample estimates;\nexact d/dloc_0 = -1, d/dlog_scale_0 = -0.5"
)
print(
    f"{'D':>4} {'estimator':>18} {'mean dloc_0':>12} {'var dloc_0':>11} "
    f"{'mean dls_0':>11} {'var dls_0':>10} {'bias/se':>8}"
)
elbo_rows = []
for d in args.dims:
    for name, (make, reparam) in estimators.items():
        pyro.clear_param_store()
        model, guide, x, exact = elbo_problem(d, reparam)
        elbo = make()
        if name.startswith("SF +"):  # let the moving-average baseline settle first
            for _ in range(args.warmup):  # (every estimate below starts from this state)
                elbo.loss_and_grads(model, guide, x)
        est = gradient_estimates(
            elbo, model, guide, x, num_samples=args.samples, groups=lambda key: key
        )
        diag = compare_gradients(est, exact)
        loc, ls = est["loc"][:, 0], est["log_scale"][:, 0]
        ratio = diag["loc"].bias / diag["loc"].bias_se
        elbo_rows.append(
            (d, name, float(loc.mean()), float(loc.var()), float(ls.mean()), float(ls.var()))
        )
        print(
            f"{d:>4} {name:>18} {elbo_rows[-1][2]:>12.3f} {elbo_rows[-1][3]:>11.2f} "
            f"{elbo_rows[-1][4]:>11.3f} {elbo_rows[-1][5]:>10.2f} {ratio:>8.2f}"
        )

# %%
# The variance of one coordinate's gradient against the latent dimension, on log axes: the
# baseline helps the score function by an order of magnitude, but only a pathwise gradient is
# flat in :math:`D`. This is the case for relaxing discrete latents (tutorial 5) instead of
# using score-function gradients for them.

fig, ax = plt.subplots(figsize=(5.5, 3.5))
for name, marker in (("pathwise", "o-"), ("score function", "s-"), ("SF + avg baseline", "^-")):
    pts = [(r[0], r[3]) for r in elbo_rows if r[1] == name]
    ax.loglog([p[0] for p in pts], [p[1] for p in pts], marker, label=name)
ax.set_xlabel("latent dimension D")
ax.set_ylabel("variance of d(-ELBO)/dloc_0")
ax.set_title("Part B: Gaussian ELBO")
ax.legend()
save(fig, "04_gradient_variance")
print(f"figures: {out}/04_*.png")

# %%
# Running it from Python
# ----------------------
# ``python tutorials/04_gradient_estimators.py --help`` lists the options. From Python,
# ``main(args)`` runs this file with the given arguments and returns its variables
# (``by_hand``, ``elbo_rows``, ...).


def main(args: argparse.Namespace) -> dict:
    """Run this tutorial with ``args`` (as from :func:`parse_args`); returns its variables."""
    return runpy.run_path(__file__, init_globals={"args": args})
