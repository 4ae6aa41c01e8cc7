r"""Tutorial 2: Jensen's inequality, the bound from the prior, and how loose it is
================================================================================

Tutorial 1 summed :math:`p(x) = \sum_z p(x \mid z) p(z)` exactly, which stops being possible
once there are too many codes. The next best thing is to write the marginal likelihood as an
expectation under the prior and *sample* it. Because :math:`\log` is **concave**, Jensen's
inequality :math:`\log \mathbb{E}[Y] \ge \mathbb{E}[\log Y]` turns it into a lower bound:

.. math::

   \log p(x) = \log \mathbb{E}_{p(z)}\big[p(x \mid z)\big]
   \;\ge\; \mathbb{E}_{p(z)}\big[\log p(x \mid z)\big].

(The inequality goes this way for a concave function; it is the convex case that flips it.) This
tutorial measures, on the model of tutorial 1, how loose that bound is, shows that the gap is
exactly a KL divergence, and that sampling more from the prior does not close it.
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
import pyro.distributions as dist
import torch

from pyro_dvae.data import SyntheticModel
from pyro_dvae.distributions import BernoulliVector
from pyro_dvae.infer import (
    EnumeratedELBO,
    discrete_elbo,
    exact_log_likelihood,
    iwae_log_likelihood,
)
from pyro_dvae.utils.options import HelpFormatter

if "ipykernel" not in sys.modules:  # a notebook keeps its inline figures
    plt.switch_backend("Agg")
smoke_test = "CI" in os.environ


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Tutorial 2: the bound from the prior, E_p(z)[log p(x|z)] <= log p(x), exactly and by "
            "Monte Carlo, and how it loosens as the evidence (pixels) grows."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--out", default="runs/tutorials/02_prior_bound", help="directory for the figures"
    )
    p.add_argument("--groups", type=int, default=3, help="latent groups N of the synthetic model")
    p.add_argument("--categories", type=int, default=4, help="categories K per group")
    p.add_argument("--data-dim", type=int, default=64, help="pixels D of each datum")
    p.add_argument(
        "--num-data",
        type=int,
        default=100 if not smoke_test else 20,
        help="data points sampled from the model; smaller with CI set",
    )
    p.add_argument(
        "--samples",
        type=int,
        nargs="+",
        default=[1, 10, 100, 1000, 10000] if not smoke_test else [1, 10, 100],
        help=(
            "prior sample counts S of the Monte Carlo bounds, space separated; smaller with CI set"
        ),
    )
    p.add_argument(
        "--dims",
        type=int,
        nargs="+",
        default=[4, 16, 64, 256] if not smoke_test else [4, 16, 64],
        help="pixel counts D of the looseness study, space separated; smaller with CI set",
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
# The prior as a "guide"
# ----------------------
# The model is tutorial 1's (:math:`N` categorical groups, :math:`D` Bernoulli pixels). In Pyro's
# terms, a bound :math:`\mathbb{E}_{q}[\log p(x, z) - \log q(z)]` is computed from a ``model``
# and a ``guide`` that proposes :math:`z`; using the prior itself as the guide, :math:`q = p(z)`,
# the :math:`\log p(z) - \log q(z)` terms cancel and what is left is exactly the bound above.


def make_model_and_prior_guide(true: SyntheticModel):
    """The tutorial-1 model, and a "guide" that simply samples z from the prior."""
    prior_logits = true.prior_logits.float()
    weights, bias = true.weights.float(), true.bias.float()

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior_logits).to_event(1))
            pyro.sample(
                "x", BernoulliVector(bias + torch.einsum("...nk,nkd->...d", z, weights)), obs=x
            )

    def prior_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.OneHotCategorical(logits=prior_logits).to_event(1))

    return model, prior_guide


true = SyntheticModel.random(args.groups, args.categories, args.data_dim, seed=args.seed)
x, _ = true.sample(args.num_data, generator)
model, prior_guide = make_model_and_prior_guide(true)

# %%
# The gap is a KL divergence
# --------------------------
# Writing :math:`p(x \mid z) = p(z \mid x)\, p(x) / p(z)` inside the expectation gives the gap
# in closed form:
#
# .. math::
#
#    \log p(x) - \mathbb{E}_{p(z)}\big[\log p(x \mid z)\big]
#    = \mathbb{E}_{p(z)}\Big[\log \frac{p(z)}{p(z \mid x)}\Big]
#    = \mathrm{KL}\big(p(z) \,\|\, p(z \mid x)\big) \;\ge\; 0.
#
# All three quantities can be computed exactly here: :math:`\log p(x)` with
# :func:`~pyro_dvae.infer.exact_log_likelihood`, the bound with
# :meth:`EnumeratedELBO.per_datum <pyro_dvae.infer.EnumeratedELBO.per_datum>` (which sums over
# every code of the guide instead of sampling), and the KL by an independent float64 sum.


def kl_prior_to_posterior(true: SyntheticModel, x: torch.Tensor) -> torch.Tensor:
    """KL(p(z) || p(z | x)) per datum, by an independent float64 sum over every code.

    ``log p(z | x) = log p(x, z) - log p(x)`` is kept in log space: far-away codes have
    posterior probabilities that underflow even float64.
    """
    log_joint = true.log_joint(x)  # [num_data, K^N]
    log_post = log_joint - log_joint.logsumexp(-1, keepdim=True)
    log_prior = true.log_prior()  # [K^N]
    return (log_prior.exp() * (log_prior - log_post)).sum(-1).float()


log_px = exact_log_likelihood(model, x)
prior_bound = EnumeratedELBO().per_datum(model, prior_guide, x)  # E_p(z) log p(x|z), exact
kl = kl_prior_to_posterior(true, x)
identity_error = float((log_px - prior_bound - kl).abs().max())
print(
    f"model: {args.groups}x{args.categories} latents, D={args.data_dim}, "
    f"{args.num_data} data; nats per datum, averaged over the data"
)
print(f"  exact log p(x)                      = {float(log_px.mean()):9.3f}")
print(f"  exact E_p(z)[log p(x|z)]            = {float(prior_bound.mean()):9.3f}")
print(f"  gap log p(x) - E_p[log p(x|z)]      = {float((log_px - prior_bound).mean()):9.3f}")
print(
    f"  KL(p(z) || p(z|x)), float64 sum     = {float(kl.mean()):9.3f}"
    f"   (max |gap - KL| = {identity_error:.1e})"
)
assert identity_error < 1e-3, identity_error  # float32 round-off on ~100-nat numbers

# %%
# Datum by datum, the gap and the KL lie on the identity line. The gap is large, tens of nats:
# the prior almost never proposes a code that explains a given image.

fig, ax = plt.subplots(figsize=(4.2, 3.6))
gap = (log_px - prior_bound).detach()
ax.plot(kl.tolist(), gap.tolist(), "o", ms=4, alpha=0.7)
lim = [0.0, float(max(gap.max(), kl.max())) * 1.05]
ax.plot(lim, lim, "k--", lw=0.8, label="gap = KL")
ax.set_xlabel("KL(p(z) || p(z | x))  [nats]")
ax.set_ylabel("log p(x) - E_p[log p(x | z)]")
ax.set_title("The bound's gap, per datum")
ax.legend()
save(fig, "02_gap_is_kl")

# %%
# Sampling does not close the gap
# -------------------------------
# With :math:`S` prior samples :math:`z_s \sim p(z)` there are two natural estimators:
#
# .. math::
#
#    \frac{1}{S} \sum_{s=1}^S \log p(x \mid z_s)
#    \qquad \text{and} \qquad
#    \log \frac{1}{S} \sum_{s=1}^S p(x \mid z_s).
#
# The first (:func:`~pyro_dvae.infer.discrete_elbo` with the prior as guide) is an unbiased
# estimate of the *loose* bound: more samples only reduce its noise, never its gap. The second
# averages *inside* the log (:func:`~pyro_dvae.infer.iwae_log_likelihood` with the prior as
# proposal); by Jensen again it is a lower bound in expectation, and it tightens towards
# :math:`\log p(x)` as :math:`S` grows, but slowly, because the prior rarely proposes the codes
# that explain :math:`x`.

print(
    f"Monte Carlo with S prior samples (mean over data; exact log p(x) = "
    f"{float(log_px.mean()):.3f}):"
)
print(f"{'S':>7} {'mean_s log p(x|z_s)':>20} {'log mean_s p(x|z_s)':>20}")
monte_carlo = []
for s in args.samples:
    # KL(p || p) = 0; 100 samples per model run (the model broadcasts over a particle plate)
    jensen = discrete_elbo(model, prior_guide, x, num_samples=s, particles_per_batch=100)
    lme = iwae_log_likelihood(model, prior_guide, x, num_samples=s)
    monte_carlo.append((s, float(jensen.mean()), float(lme.mean())))
    print(f"{s:>7} {monte_carlo[-1][1]:>20.3f} {monte_carlo[-1][2]:>20.3f}")

fig, ax = plt.subplots(figsize=(5.5, 3.5))
ss = [r[0] for r in monte_carlo]
ax.semilogx(ss, [r[2] for r in monte_carlo], "o-", label="log mean_s p(x|z_s)")
ax.semilogx(ss, [r[1] for r in monte_carlo], "s-", label="mean_s log p(x|z_s)")
ax.axhline(float(log_px.mean()), color="k", ls="--", label="exact log p(x)")
ax.axhline(float(prior_bound.mean()), color="gray", ls=":", label="exact E_p log p(x|z)")
ax.set_xlabel("prior samples S")
ax.set_ylabel("nats per datum")
ax.set_title("Bounds from the prior")
ax.legend(fontsize=8)
save(fig, "02_prior_bound")

# %%
# More evidence, looser bound
# ---------------------------
# Each pixel is a piece of evidence about :math:`z`: with more pixels :math:`D` the posterior
# :math:`p(z \mid x)` moves further from the prior, and the gap
# :math:`\mathrm{KL}(p(z) \,\|\, p(z \mid x))` grows roughly in proportion to :math:`D`. A
# useful bound therefore needs a proposal that depends on :math:`x`: the variational posterior
# :math:`q(z \mid x)` of tutorial 3.

print("looseness of the prior bound as the evidence grows (exact, nats per datum):")
print(f"{'D':>5} {'log p(x)':>10} {'E_p log p(x|z)':>15} {'gap':>8} {'gap/D':>7}")
by_dim = []
for d in args.dims:
    m = SyntheticModel.random(args.groups, args.categories, d, seed=args.seed)
    xd, _ = m.sample(args.num_data, generator)
    md, gd = make_model_and_prior_guide(m)
    lp = float(exact_log_likelihood(md, xd).mean())
    pb = float(EnumeratedELBO().per_datum(md, gd, xd).mean())
    by_dim.append((d, lp, pb))
    print(f"{d:>5} {lp:>10.3f} {pb:>15.3f} {lp - pb:>8.3f} {(lp - pb) / d:>7.3f}")

fig, ax = plt.subplots(figsize=(4.5, 3.3))
ax.loglog([r[0] for r in by_dim], [r[1] - r[2] for r in by_dim], "o-", label="gap (exact)")
dims = [r[0] for r in by_dim]
last_gap = by_dim[-1][1] - by_dim[-1][2]
ax.loglog(
    dims, [last_gap * d / dims[-1] for d in dims], "--", color="gray", label="proportional to D"
)
ax.set_xlabel("pixels D")
ax.set_ylabel("nats per datum")
ax.set_title("Gap of the prior bound vs evidence")
ax.legend()
save(fig, "02_gap_vs_dim")
print(f"figures: {out}/02_*.png")

# %%
# Running it from Python
# ----------------------
# ``python tutorials/02_prior_bound.py --help`` lists the options. From Python, ``main(args)``
# runs this file with the given arguments and returns its variables (``log_px``, ``kl``,
# ``monte_carlo``, ``by_dim``, ...).


def main(args: argparse.Namespace) -> dict:
    """Run this tutorial with ``args`` (as from :func:`parse_args`); returns its variables."""
    return runpy.run_path(__file__, init_globals={"args": args})
