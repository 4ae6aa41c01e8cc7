r"""Tutorial 3: the variational posterior q(z | x), the ELBO, and the asymmetry of KL
===================================================================================

Tutorial 2 showed that proposing codes from the prior gives a bound that is tens of nats loose,
because the prior ignores the datum. The fix is to propose from a distribution that *looks at*
:math:`x`: a **variational posterior** :math:`q(z \mid x)`. Jensen's inequality applied to
:math:`p(x) = \mathbb{E}_{q}[p(x, z) / q(z \mid x)]` gives the evidence lower bound (ELBO), which
can be written two ways:

.. math::

   \mathrm{ELBO}(q)
   = \underbrace{\mathbb{E}_{q}\big[\log p(x \mid z)\big]}_{\text{reconstruction}}
     - \mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)
   = \log p(x) - \mathrm{KL}\big(q(z \mid x) \,\|\, p(z \mid x)\big)
   \;\le\; \log p(x).

Reconstruction **minus** KL to the prior; equivalently the evidence minus KL to the exact
posterior. This tutorial checks both lines numerically, computing every term exactly by summing
over the codes, and then shows what maximizing the ELBO does when :math:`q` cannot match the
posterior: it minimizes the *reverse* KL, which is mode-seeking.
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
from torch.distributions import kl_divergence

from pyro_dvae.data import SyntheticModel
from pyro_dvae.distributions import BernoulliVector
from pyro_dvae.infer import (
    EnumeratedELBO,
    TorchOptimSVI,
    exact_log_likelihood,
    exact_posterior,
)
from pyro_dvae.utils.options import HelpFormatter

if "ipykernel" not in sys.modules:  # a notebook keeps its inline figures
    plt.switch_backend("Agg")
smoke_test = "CI" in os.environ


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Tutorial 3: the variational posterior q(z | x), the ELBO identity and the asymmetry of"
            " KL(q || p) against KL(p || q)."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--out", default="runs/tutorials/03_variational_posterior", help="directory for the figures"
    )
    p.add_argument(
        "--categories", type=int, default=8, help="categories K of the one-group mixture model"
    )
    p.add_argument("--data-dim", type=int, default=64, help="pixels D of each datum")
    p.add_argument(
        "--num-data",
        type=int,
        default=100 if not smoke_test else 20,
        help="data points sampled from the model; smaller with CI set",
    )
    p.add_argument(
        "--path",
        type=float,
        nargs="+",
        default=[0.0, 0.25, 0.5, 0.75, 0.9, 1.0] if not smoke_test else [0.0, 0.5, 1.0],
        help=(
            "points t of the path q_t = (1 - t) p(z) + t p(z|x), space separated; smaller with CI "
            "set"
        ),
    )
    p.add_argument(
        "--cause-prior",
        type=float,
        default=0.3,
        help="prior probability of each of the two binary causes z1, z2",
    )
    p.add_argument(
        "--noise", type=float, default=0.25, help="standard deviation of x ~ Normal(z1 + z2, noise)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=300 if not smoke_test else 100,
        help=(
            "SVI steps fitting the factorized q to the explaining-away posterior; smaller with CI "
            "set"
        ),
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed of the model, the data and the fit"
    )
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
# Part A: a mixture model
# -----------------------
# One categorical latent with :math:`K` classes and :math:`D` Bernoulli pixels (tutorial 1's
# model with :math:`N = 1`). The guide is a categorical :math:`q(z \mid x)` with fixed
# per-datum logits, so we can put :math:`q` wherever we like and read off every term exactly:
# the ELBO from :class:`~pyro_dvae.infer.EnumeratedELBO` (which sums over the guide's codes),
# the reconstruction and both KL divergences from the float64 log-joint.


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
    f"mixture model, K={args.categories} classes, D={args.data_dim} pixels, "
    f"{args.num_data} data; exact mean log p(x) = {float(log_px.mean()):.3f} nats"
)

# %%
# From the prior to the posterior
# -------------------------------
# Move :math:`q` along the path :math:`q_t = (1 - t)\, p(z) + t\, p(z \mid x)`, from the prior
# (:math:`t = 0`, tutorial 2's loose bound) to the exact posterior (:math:`t = 1`). At every
# :math:`t` the table checks both lines of the ELBO identity: ``ELBO`` (enumerated through
# Pyro) equals ``recon - KL(q||p(z))``, and the gap ``log p(x) - ELBO`` equals
# :math:`\mathrm{KL}(q \,\|\, p(z \mid x))`, both to float32 round-off. At
# :math:`q = p(z \mid x)` the gap is zero: the bound is tight.

print(
    f"{'t':>5} {'recon':>9} {'KL(q||p(z))':>12} {'ELBO':>9} {'recon-KL':>9} "
    f"{'gap':>8} {'KL(q||p(z|x))':>14}"
)
path = []
q_path = []
for t in args.path:
    q_probs = (1 - t) * log_prior.exp() + t * log_post.exp()  # [n, K], a mixture path
    log_q = q_probs.clamp_min(1e-300).log()
    q_path.append(q_probs)
    elbo = EnumeratedELBO().per_datum(model, categorical_guide(log_q.float().unsqueeze(1)), x)
    elbo = elbo.double()
    q = dist.OneHotCategorical(logits=log_q)
    recon = (log_q.exp() * log_lik).sum(-1)  # E_q[log p(x | z)]
    kl_prior = kl_divergence(q, prior)  # KL(q(z|x) || p(z))
    kl_post = kl_divergence(q, dist.OneHotCategorical(logits=log_post))  # KL(q || p(z|x))
    # both lines of the identity, per datum (float32 ELBO of ~50-nat numbers)
    assert float((recon - kl_prior - elbo).abs().max()) < 1e-3
    assert float((log_px - elbo - kl_post).abs().max()) < 1e-3
    row = tuple(float(v.mean()) for v in (recon, kl_prior, elbo, log_px - elbo, kl_post))
    path.append((t,) + row)
    print(
        f"{t:>5.2f} {row[0]:>9.3f} {row[1]:>12.3f} {row[2]:>9.3f} {row[0] - row[1]:>9.3f} "
        f"{row[3]:>8.3f} {row[4]:>14.4f}"
    )

# %%
# The gap shrinks to zero as :math:`q` reaches the posterior (left). On the right, one datum's
# :math:`q_t` along the way: the prior spreads its mass over every class, the posterior puts
# nearly all of it on one, and the ELBO rewards :math:`q` for moving there.

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
ts = [r[0] for r in path]
axes[0].plot(ts, [r[4] for r in path], "o-", label="log p(x) - ELBO")
axes[0].plot(ts, [r[5] for r in path], "x--", ms=10, label="KL(q || p(z|x))")
axes[0].set_xlabel("t (0: q = prior, 1: q = exact posterior)")
axes[0].set_ylabel("nats per datum")
axes[0].set_title("ELBO gap along the path to the posterior")
axes[0].legend()
width = 0.8 / len(q_path)
for i, (t, q_probs) in enumerate(zip(args.path, q_path)):
    pos = [k + (i - (len(q_path) - 1) / 2) * width for k in range(args.categories)]
    axes[1].bar(pos, q_probs[0].tolist(), width, label=f"t = {t:g}")
axes[1].set_xlabel("class z")
axes[1].set_ylabel("q_t(z | x_0)")
axes[1].set_title("q along the path, datum 0")
axes[1].legend(fontsize=8)
save(fig, "03_elbo_gap")

# %%
# Part B: explaining away, and which KL the ELBO minimizes
# --------------------------------------------------------
# Since :math:`\log p(x)` does not depend on :math:`q`, maximizing the ELBO *minimizes the
# reverse KL* :math:`\mathrm{KL}(q \,\|\, p(z \mid x))`. KL is not symmetric, and the
# difference matters when :math:`q` is too simple for the posterior. Take two binary causes and
# one noisy observation of their sum,
#
# .. math::
#
#    z_1, z_2 \sim \mathrm{Bernoulli}(0.3), \qquad x \sim \mathcal{N}(z_1 + z_2, \sigma),
#    \qquad x = 1 \text{ observed}.
#
# Either cause explains the observation, and each *explains away* the other: the posterior puts
# its mass on :math:`(1, 0)` and :math:`(0, 1)`. A mean-field :math:`q(z_1)\, q(z_2)` cannot
# represent that. Fitted by maximizing the exact ELBO (reverse KL), it locks onto one mode
# (zero-forcing: it avoids codes the posterior rules out). The minimizer of the *forward*
# :math:`\mathrm{KL}(p \,\|\, q)` over product distributions is the product of the posterior
# marginals (moment matching): it covers both modes, and so puts half its mass on codes the
# posterior rules out.

prior_p = torch.full((2,), args.cause_prior)


def two_cause_model(x):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Bernoulli(prior_p).to_event(1))
        pyro.sample("x", dist.Normal(z.sum(-1), args.noise), obs=x)


def mean_field_guide(x):
    logits = pyro.param("q_logits", torch.tensor([0.3, -0.3]))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Bernoulli(logits=logits).to_event(1))


x_obs = torch.tensor([1.0])
values, post = exact_posterior(two_cause_model, x_obs)  # every code (00, 01, 10, 11), p(z | x)
codes = values["z"].reshape(-1, 2)
post = post[:, 0].double()

# reverse KL: maximize the exact ELBO (EnumeratedELBO), i.e. minimize KL(q || p(z|x))
pyro.clear_param_store()
svi = TorchOptimSVI(
    two_cause_model, mean_field_guide, lambda ps: torch.optim.Adam(ps, lr=0.1), EnumeratedELBO()
)
for _ in range(args.steps):
    svi.step(x_obs)
q_rev_marg = torch.sigmoid(pyro.param("q_logits").detach()).double()
# forward KL: for a product q, argmin_q KL(p || q) is the product of p's marginals
q_fwd_marg = (post.unsqueeze(-1) * codes.double()).sum(0)


def joint(marg):
    c = codes.double()
    return (marg**c * (1 - marg) ** (1 - c)).prod(-1)


def kl(a, b):
    a, b = a.clamp_min(1e-300), b.clamp_min(1e-300)
    return float((a * (a / b).log()).sum())


fits = {"posterior": post, "reverse-KL fit": joint(q_rev_marg), "forward-KL fit": joint(q_fwd_marg)}
print(f"z1, z2 ~ Bernoulli({args.cause_prior}), x ~ Normal(z1 + z2, {args.noise}), x = 1 observed")
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
asymmetry = {n: (kl(q, post), kl(post, q)) for n, q in fits.items()}
# each fit wins on the divergence it minimizes
assert asymmetry["reverse-KL fit"][0] < asymmetry["forward-KL fit"][0]
assert asymmetry["forward-KL fit"][1] < asymmetry["reverse-KL fit"][1]

# %%
# The two fits side by side: the reverse-KL fit sits on one of the posterior's two modes, the
# forward-KL fit spreads evenly over all four codes.

fig, ax = plt.subplots(figsize=(5.5, 3.5))
labels = ["".join(str(int(v)) for v in c) for c in codes]
width = 0.27
for i, (name, q) in enumerate(fits.items()):
    pos = [j + (i - 1) * width for j in range(len(labels))]
    ax.bar(pos, q.tolist(), width, label=name)
ax.set_xticks(range(len(labels)), labels)
ax.set_xlabel("code z1 z2")
ax.set_ylabel("probability")
ax.set_title("Reverse vs forward KL (mean-field q)")
ax.legend(fontsize=8)
save(fig, "03_variational_posterior")
print(f"figures: {out}/03_*.png")

# %%
# Running it from Python
# ----------------------
# ``python tutorials/03_variational_posterior.py --help`` lists the options. From Python,
# ``main(args)`` runs this file with the given arguments and returns its variables (``path``,
# ``fits``, ``asymmetry``, ...).


def main(args: argparse.Namespace) -> dict:
    """Run this tutorial with ``args`` (as from :func:`parse_args`); returns its variables."""
    return runpy.run_path(__file__, init_globals={"args": args})
