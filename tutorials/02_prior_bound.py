"""Tutorial 2: the lower bound from the prior, E_p(z)[log p(x | z)], and how loose it is.

What it shows, on the model of tutorial 1 (``N`` categorical groups, ``D`` Bernoulli pixels):

* Because ``log`` is **concave**, Jensen's inequality gives ``log E[Y] >= E[log Y]``, so::

      log p(x) = log E_p(z)[p(x | z)]  >=  E_p(z)[log p(x | z)]

  (the inequality goes this way; it is the convex case that flips it). The gap is exactly
  ``KL(p(z) || p(z | x))``: the prior used as a variational distribution. The script computes
  all three numbers exactly (``EnumeratedELBO.per_datum`` with the prior as guide,
  ``exact_log_likelihood``, and an independent float64 sum for the KL) and checks the identity.
* Monte Carlo: averaging ``log p(x | z_s)`` over ``S`` prior samples (``discrete_elbo`` with the
  prior as guide) estimates the *loose* bound; more samples only reduce its noise, never its
  gap. Averaging inside the log, ``log (1/S) sum_s p(x | z_s)`` (``iwae_log_likelihood`` with
  the prior as proposal), tightens towards ``log p(x)`` as ``S`` grows, but slowly, because the
  prior rarely proposes the codes that explain ``x``.
* The looseness grows with the amount of evidence: with more pixels ``D`` the posterior moves
  further from the prior, and the gap (in nats) grows roughly in proportion to ``D``.

Run ``python tutorials/02_prior_bound.py`` (add ``--out DIR`` for the figure's folder).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402

from pyro_dvae.data import SyntheticModel  # noqa: E402
from pyro_dvae.distributions import BernoulliVector  # noqa: E402
from pyro_dvae.infer import (  # noqa: E402
    EnumeratedELBO,
    discrete_elbo,
    exact_log_likelihood,
    iwae_log_likelihood,
)

smoke_test = "CI" in os.environ


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


def kl_prior_to_posterior(true: SyntheticModel, x: torch.Tensor) -> torch.Tensor:
    """KL(p(z) || p(z | x)) per datum, by an independent float64 sum over every code.

    ``log p(z | x) = log p(x, z) - log p(x)`` is kept in log space: far-away codes have
    posterior probabilities that underflow even float64.
    """
    log_joint = true.log_joint(x)  # [num_data, K^N]
    log_post = log_joint - log_joint.logsumexp(-1, keepdim=True)
    log_prior = true.log_prior()  # [K^N]
    return (log_prior.exp() * (log_prior - log_post)).sum(-1).float()


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)

    true = SyntheticModel.random(args.groups, args.categories, args.data_dim, seed=args.seed)
    x, _ = true.sample(args.num_data, generator)
    model, prior_guide = make_model_and_prior_guide(true)

    log_px = exact_log_likelihood(model, x)
    prior_bound = EnumeratedELBO().per_datum(model, prior_guide, x)  # E_p(z) log p(x|z), exact
    kl = kl_prior_to_posterior(true, x)
    print(
        f"model: {args.groups}x{args.categories} latents, D={args.data_dim}, "
        f"{args.num_data} data; nats per datum, averaged over the data"
    )
    print(f"  exact log p(x)                      = {float(log_px.mean()):9.3f}")
    print(f"  exact E_p(z)[log p(x|z)]            = {float(prior_bound.mean()):9.3f}")
    print(f"  gap log p(x) - E_p[log p(x|z)]      = {float((log_px - prior_bound).mean()):9.3f}")
    print(
        f"  KL(p(z) || p(z|x)), float64 sum     = {float(kl.mean()):9.3f}"
        f"   (max |gap - KL| = {float((log_px - prior_bound - kl).abs().max()):.1e})"
    )

    print(
        f"\nMonte Carlo with S prior samples (mean over data; exact log p(x) = "
        f"{float(log_px.mean()):.3f}):"
    )
    print(f"{'S':>7} {'mean_s log p(x|z_s)':>20} {'log mean_s p(x|z_s)':>20}")
    rows = []
    for s in args.samples:
        jensen = discrete_elbo(model, prior_guide, x, num_samples=s)  # KL(p||p) = 0
        lme = iwae_log_likelihood(model, prior_guide, x, num_samples=s)
        rows.append((s, float(jensen.mean()), float(lme.mean())))
        print(f"{s:>7} {rows[-1][1]:>20.3f} {rows[-1][2]:>20.3f}")

    print("\nlooseness of the prior bound as the evidence grows (exact, nats per datum):")
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

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ss = [r[0] for r in rows]
    ax.semilogx(ss, [r[2] for r in rows], "o-", label="log mean_s p(x|z_s)")
    ax.semilogx(ss, [r[1] for r in rows], "s-", label="mean_s log p(x|z_s)")
    ax.axhline(float(log_px.mean()), color="k", ls="--", label="exact log p(x)")
    ax.axhline(float(prior_bound.mean()), color="gray", ls=":", label="exact E_p log p(x|z)")
    ax.set_xlabel("prior samples S")
    ax.set_ylabel("nats per datum")
    ax.set_title("Bounds from the prior")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "02_prior_bound.png", dpi=100)
    plt.close(fig)
    print(f"figure: {out / '02_prior_bound.png'}")
    return {
        "log_px": float(log_px.mean()),
        "prior_bound": float(prior_bound.mean()),
        "kl": float(kl.mean()),
        "monte_carlo": rows,
        "by_dim": by_dim,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tutorials/02_prior_bound")
    p.add_argument("--groups", type=int, default=3)
    p.add_argument("--categories", type=int, default=4)
    p.add_argument("--data-dim", type=int, default=64)
    p.add_argument("--num-data", type=int, default=100 if not smoke_test else 20)
    p.add_argument(
        "--samples",
        type=int,
        nargs="+",
        default=[1, 10, 100, 1000, 10000] if not smoke_test else [1, 10, 100],
    )
    p.add_argument(
        "--dims", type=int, nargs="+", default=[4, 16, 64, 256] if not smoke_test else [4, 16, 64]
    )
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
