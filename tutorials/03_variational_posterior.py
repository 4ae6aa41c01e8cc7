"""Tutorial 3: the variational posterior q(z | x), the ELBO, and the asymmetry of KL.

What it shows (every quantity computed exactly, by summing over every latent code):

* The evidence lower bound, with the sign written correctly::

      ELBO(q) = E_q[log p(x | z)] - KL(q(z | x) || p(z))      (reconstruction MINUS KL)
              = log p(x) - KL(q(z | x) || p(z | x))   <=  log p(x)

  Part A checks both lines numerically on a mixture model (one categorical latent with ``K``
  classes, ``D`` Bernoulli pixels): the ELBO from :class:`~pyro_dvae.infer.EnumeratedELBO`
  equals reconstruction minus KL, and the gap ``log p(x) - ELBO`` equals
  ``KL(q || p(z | x))``. Moving q along the path ``q_t = (1 - t) p(z) + t p(z | x)`` from the
  prior (``t = 0``) to the exact posterior (``t = 1``), the gap shrinks to zero: at
  ``q = p(z | x)`` the bound is tight.
* KL is not symmetric. Part B: two binary causes ``z1, z2`` and one observation
  ``x ~ Normal(z1 + z2, sigma)`` with ``x = 1`` ("explaining away": the posterior puts its mass
  on ``(1, 0)`` and ``(0, 1)``). A mean-field ``q(z1) q(z2)`` fitted by maximizing the ELBO,
  i.e. minimizing the *reverse* ``KL(q || p)``, locks onto one mode (zero-forcing); the
  minimizer of the *forward* ``KL(p || q)`` is the product of the posterior marginals, which
  covers both modes and puts half its mass on codes the posterior rules out. The script
  prints both divergences for both fits.

Run ``python tutorials/03_variational_posterior.py`` (add ``--out DIR`` for the figures).
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
from torch.distributions import kl_divergence  # noqa: E402

from pyro_dvae.data import SyntheticModel  # noqa: E402
from pyro_dvae.distributions import BernoulliVector  # noqa: E402
from pyro_dvae.infer import (  # noqa: E402
    EnumeratedELBO,
    TorchOptimSVI,
    exact_log_likelihood,
    exact_posterior,
)

smoke_test = "CI" in os.environ


# -- Part A: a mixture model, q moving from the prior to the exact posterior ------------------
def mixture_model(true: SyntheticModel):
    prior_logits = true.prior_logits.float()  # [1, K]
    weights, bias = true.weights.float(), true.bias.float()

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.OneHotCategorical(logits=prior_logits).to_event(1))
            pyro.sample(
                "x", BernoulliVector(bias + torch.einsum("...nk,nkd->...d", z, weights)), obs=x
            )

    return model


def categorical_guide(logits: torch.Tensor):
    """q(z | x) with fixed per-datum logits ``[num_data, 1, K]``."""

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1))

    return guide


def part_a(args, generator) -> list[tuple]:
    true = SyntheticModel.random(1, args.categories, args.data_dim, seed=args.seed)
    x, _ = true.sample(args.num_data, generator)
    model = mixture_model(true)
    log_px = exact_log_likelihood(model, x).double()
    log_joint = true.log_joint(x)  # [n, K] float64: log p(x, z) for every class z
    log_prior = torch.log_softmax(true.prior_logits[0], -1)  # [K]
    log_post = log_joint - log_joint.logsumexp(-1, keepdim=True)
    log_lik = log_joint - log_prior  # log p(x | z)
    prior = dist.OneHotCategorical(logits=true.prior_logits[0])

    print(
        f"Part A: mixture model, K={args.categories} classes, D={args.data_dim} pixels, "
        f"{args.num_data} data; exact mean log p(x) = {float(log_px.mean()):.3f} nats"
    )
    print(
        f"{'t':>5} {'recon':>9} {'KL(q||p(z))':>12} {'ELBO':>9} {'recon-KL':>9} "
        f"{'gap':>8} {'KL(q||p(z|x))':>14}"
    )
    rows = []
    for t in args.path:
        q_probs = (1 - t) * log_prior.exp() + t * log_post.exp()  # [n, K], a mixture path
        log_q = q_probs.clamp_min(1e-300).log()
        elbo = (
            EnumeratedELBO()
            .per_datum(model, categorical_guide(log_q.float().unsqueeze(1)), x)
            .double()
        )
        q = dist.OneHotCategorical(logits=log_q)
        recon = (log_q.exp() * log_lik).sum(-1)  # E_q[log p(x | z)]
        kl_prior = kl_divergence(q, prior)  # KL(q(z|x) || p(z))
        kl_post = kl_divergence(q, dist.OneHotCategorical(logits=log_post))  # KL(q || p(z|x))
        row = tuple(float(v.mean()) for v in (recon, kl_prior, elbo, log_px - elbo, kl_post))
        rows.append((t,) + row)
        print(
            f"{t:>5.2f} {row[0]:>9.3f} {row[1]:>12.3f} {row[2]:>9.3f} {row[0] - row[1]:>9.3f} "
            f"{row[3]:>8.3f} {row[4]:>14.4f}"
        )
    return rows


# -- Part B: explaining away, reverse vs forward KL ------------------------------------------
def part_b(args) -> dict:
    prior_p = torch.full((2,), args.cause_prior)

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Bernoulli(prior_p).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), args.noise), obs=x)

    def guide(x):
        logits = pyro.param("q_logits", torch.tensor([0.3, -0.3]))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Bernoulli(logits=logits).to_event(1))

    x = torch.tensor([1.0])
    values, post = exact_posterior(model, x)  # every code (00, 01, 10, 11) and p(z | x)
    codes = values["z"].reshape(-1, 2)
    post = post[:, 0].double()

    # reverse KL: maximize the exact ELBO (EnumeratedELBO), i.e. minimize KL(q || p(z|x))
    pyro.clear_param_store()
    svi = TorchOptimSVI(model, guide, lambda ps: torch.optim.Adam(ps, lr=0.1), EnumeratedELBO())
    for _ in range(args.steps):
        svi.step(x)
    q_rev_marg = torch.sigmoid(pyro.param("q_logits").detach()).double()
    # forward KL: for a product q, argmin_q KL(p || q) is the product of p's marginals
    q_fwd_marg = (post.unsqueeze(-1) * codes.double()).sum(0)

    def joint(marg):
        c = codes.double()
        return (marg**c * (1 - marg) ** (1 - c)).prod(-1)

    def kl(a, b):
        a, b = a.clamp_min(1e-300), b.clamp_min(1e-300)
        return float((a * (a / b).log()).sum())

    fits = {
        "posterior": post,
        "reverse-KL fit": joint(q_rev_marg),
        "forward-KL fit": joint(q_fwd_marg),
    }
    print(
        f"\nPart B: z1, z2 ~ Bernoulli({args.cause_prior}), x ~ Normal(z1 + z2, {args.noise}), "
        "x = 1 observed"
    )
    print(
        f"{'':>16} "
        + " ".join(f"{''.join(str(int(v)) for v in c):>7}" for c in codes)
        + f" {'KL(q||p)':>9} {'KL(p||q)':>9}"
    )
    for name, q in fits.items():
        print(
            f"{name:>16} "
            + " ".join(f"{float(v):>7.4f}" for v in q)
            + f" {kl(q, post):>9.4f} {kl(post, q):>9.4f}"
        )
    print(
        f"reverse-KL fit marginals q(z=1) = {[round(float(v), 4) for v in q_rev_marg]}, "
        f"forward-KL fit = {[round(float(v), 4) for v in q_fwd_marg]}"
    )
    return {
        "codes": codes,
        "fits": fits,
        "kl": {n: (kl(q, post), kl(post, q)) for n, q in fits.items()},
    }


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    rows = part_a(args, generator)
    b = part_b(args)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    ts = [r[0] for r in rows]
    axes[0].plot(ts, [r[4] for r in rows], "o-", label="log p(x) - ELBO")
    axes[0].plot(ts, [r[5] for r in rows], "x--", label="KL(q || p(z|x))")
    axes[0].set_xlabel("t (0: q = prior, 1: q = exact posterior)")
    axes[0].set_ylabel("nats per datum")
    axes[0].set_title("ELBO gap along the path to the posterior")
    axes[0].legend()
    labels = ["".join(str(int(v)) for v in c) for c in b["codes"]]
    width = 0.27
    for i, (name, q) in enumerate(b["fits"].items()):
        pos = [j + (i - 1) * width for j in range(len(labels))]
        axes[1].bar(pos, q.tolist(), width, label=name)
    axes[1].set_xticks(range(len(labels)), labels)
    axes[1].set_xlabel("code z1 z2")
    axes[1].set_ylabel("probability")
    axes[1].set_title("Reverse vs forward KL (mean-field q)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "03_variational_posterior.png", dpi=100)
    plt.close(fig)
    print(f"figure: {out / '03_variational_posterior.png'}")
    return {"path": rows, "asymmetry": b["kl"]}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tutorials/03_variational_posterior")
    p.add_argument("--categories", type=int, default=8)
    p.add_argument("--data-dim", type=int, default=64)
    p.add_argument("--num-data", type=int, default=100 if not smoke_test else 20)
    p.add_argument(
        "--path",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 0.9, 1.0] if not smoke_test else [0.0, 0.5, 1.0],
    )
    p.add_argument("--cause-prior", type=float, default=0.3)
    p.add_argument("--noise", type=float, default=0.25)
    p.add_argument("--steps", type=int, default=300 if not smoke_test else 100)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
