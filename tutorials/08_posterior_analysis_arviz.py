r"""Tutorial 8: analysing the posterior with ArviZ: export, summary, LOO, latent usage
==================================================================================

A trained VAE is a posterior :math:`q(z \mid x)` over codes for every image, and the questions
one asks of it are those of any Bayesian analysis: what did it learn, how certain is it, does the
model fit, and which of two models is better. `ArviZ <https://python.arviz.org>`_ answers such
questions for any sampler's output; this tutorial exports two trained
:class:`~pyro_dvae.models.DiscreteVAE` runs on the embedded digits to ArviZ data and analyses
them: the ``analytic`` and the ``relaxed`` KL choice (tutorial 6 showed that the relaxed choice
can collapse the posterior onto the prior, and we will see it here from several sides).
"""

# %%
# Setup
# -----
# Sizes are command-line options (``--help``); ``CI`` set shrinks them (smoke mode: five
# training steps, so the models below are barely trained when this page is built with ``CI``
# set, and the full-size conclusions quoted in the text need a full run).

import argparse
import os
import runpy
import sys
import warnings
from pathlib import Path

import arviz as az
import matplotlib.pyplot as plt
import numpy as np

from pyro_dvae.analysis import (
    code_usage,
    mutual_information,
    posterior_entropy,
    probs_from_inference_data,
    save_inference_data,
    to_inference_data,
)
from pyro_dvae.analysis.latent_stats import code_label_joint
from pyro_dvae.data import load_digits
from pyro_dvae.plots import (
    plot_code_usage,
    plot_code_vs_label,
    plot_latent_traversals,
)
from pyro_dvae.training import TrainConfig, train
from pyro_dvae.utils.options import HelpFormatter

if "ipykernel" not in sys.modules:  # a notebook keeps its inline figures
    plt.switch_backend("Agg")
smoke_test = "CI" in os.environ


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Tutorial 8: analysing the posterior of a trained categorical VAE with ArviZ: export, "
            "summary, LOO, PPC and latent usage."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--out",
        default="runs/tutorials/08_posterior_analysis_arviz",
        help="directory for the exports and figures",
    )
    p.add_argument(
        "--latent",
        default="4x8" if not smoke_test else "2x4",
        help="latent 'NxK'; smaller with CI set",
    )
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=[256, 128] if not smoke_test else [16],
        help="encoder hidden widths, space separated; smaller with CI set",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=100 if not smoke_test else 1,
        help="training epochs of each model; smaller with CI set",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None if not smoke_test else 5,
        help="stop training after this many steps (default: none; 5 in smoke mode)",
    )
    p.add_argument(
        "--iwae-samples",
        type=int,
        default=1000 if not smoke_test else 10,
        help="importance samples per test datum of the IWAE NLL; smaller with CI set",
    )
    p.add_argument(
        "--num-observations",
        type=int,
        default=200 if not smoke_test else 20,
        help="test images exported; smaller with CI set",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=100 if not smoke_test else 20,
        help="posterior draws per chain; smaller with CI set",
    )
    p.add_argument(
        "--num-chains",
        type=int,
        default=4 if not smoke_test else 2,
        help="chains of posterior draws; smaller with CI set",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of training and export")
    if "ipykernel" in sys.modules:  # a notebook kernel passes flags of its own
        return p.parse_known_args(argv)[0]
    return p.parse_args(argv)


def save(fig, name: str) -> None:
    """Save a figure under ``--out`` (on the documentation page it appears below the cell)."""
    fig.savefig(out / f"{name}.png", dpi=100)


if __name__ == "__main__":  # a script, a notebook or a documentation page; main(args) below
    args = parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# %%
# Two trained models
# ------------------
# One :func:`~pyro_dvae.training.train` run per KL choice, with everything else equal. The exact
# test :math:`-\log p(x)` (by enumeration, tutorial 1) is the yardstick that the ArviZ
# diagnostics below will be compared with.


def train_models(args: argparse.Namespace) -> dict[str, tuple]:
    """Train one model per KL choice; return ``{kl: (model, metrics)}``."""
    models = {}
    for kl in ("analytic", "relaxed"):
        config = TrainConfig(
            latent=args.latent,
            kl=kl,
            epochs=args.epochs,
            max_steps=args.max_steps,
            encoder_hidden=tuple(args.hidden),
            iwae_samples=args.iwae_samples,
            seed=args.seed,
        )
        trained = {}

        def keep(step, model, elbo, trained=trained):  # called after every training step
            trained["model"] = model

        m = train(config, progress=False, callback=keep)
        exact = m["test_nll_exact"]
        print(
            f"trained kl={kl:>8}: {m['steps']} steps, test -ELBO {m['test_nelbo']:.2f}, exact "
            f"test NLL {'n/a' if exact is None else f'{exact:.2f}'} nats"
        )
        models[kl] = (trained["model"].eval(), m)
    return models


models = train_models(args)
data = load_digits()
x, labels = data.test[: args.num_observations], data.test_labels[: args.num_observations]

# %%
# Export to ArviZ
# ---------------
# :func:`~pyro_dvae.analysis.to_inference_data` samples the trained guide and model on test
# images and returns ArviZ data (for a run directory written by ``pyro-dvae train``,
# :func:`~pyro_dvae.analysis.export_run` or ``pyro-dvae export`` do the same):
#
# * ``posterior``: integer codes :math:`z \sim q(z \mid x)`, dims ``observation, latent_group``;
# * ``posterior_predictive``: :math:`x \sim p(x \mid z)`;
# * ``log_likelihood``: :math:`\log p(x_{ij} \mid z_i)` per pixel;
# * ``prior``, ``observed_data``, ``constant_data`` (the probabilities ``z_probs`` of
#   :math:`q(z \mid x)`, the same at every draw, and the digit labels), and ``training`` (the
#   training trace).
#
# Chains are independent sample streams, not Markov chains, so R-hat and ESS only check the
# sampler. Each export is also saved as netCDF under ``--out``.

idatas = {}
for kl, (model, metrics) in models.items():
    idata = to_inference_data(
        model,
        None,
        x,
        num_samples=args.num_samples,
        num_chains=args.num_chains,
        labels=labels,
        history=metrics["history"],
        seed=args.seed,
    )
    save_inference_data(idata, out / f"idata_{kl}.nc", overwrite=True)
    idatas[kl] = idata
idata = idatas["analytic"]
print("exported groups:", ", ".join(idata.groups()[:4]) + ",\n ", ", ".join(idata.groups()[4:]))
print(f"posterior z dims: {dict(idata.posterior['z'].sizes)}")

# %%
# The posterior of one image
# --------------------------
# ``az.summary`` of the codes of one test image gives R-hat and ESS per latent group. Since the
# codes are exact draws from :math:`q(z \mid x)`, the frequency of each code over the draws
# estimates :math:`q(z \mid x)`, which the export also holds exactly (``z_probs``): the two
# agree up to Monte Carlo noise.

one = idata.posterior["z"].isel(observation=0)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # a code that q(z|x) is sure of is constant: NaN R-hat
    summary = az.summary(one.to_dataset(name="z"), kind="diagnostics", round_to=3)
print("az.summary of the codes z of observation 0 (one row per latent group):")
print(summary[["ess_bulk", "r_hat"]].to_string())
exact_probs = idata.constant_data["z_probs"].isel(observation=0).values  # (group, category)
codes = one.values.reshape(-1, exact_probs.shape[0])  # (chain * draw, group)
freq = (codes[..., None] == np.arange(exact_probs.shape[-1])).mean(0)
print("frequency of each code of group 0 over the draws, and the exact q(z | x):")
print(f"  frequency {np.round(freq[0], 3).tolist()}")
print(f"  q(z|x)    {np.round(exact_probs[0].astype(float), 3).tolist()}")
err = float(np.abs(freq - exact_probs).max())
print(f"max |code frequency - q(z|x)| = {err:.3f}")

groups, categories = exact_probs.shape
fig, axes = plt.subplots(1, groups, figsize=(2.6 * groups, 2.6), sharey=True, squeeze=False)
for g, ax in enumerate(axes[0]):
    k = np.arange(categories)
    ax.bar(k - 0.2, exact_probs[g].astype(float), 0.4, label="q(z | x), exact")
    ax.bar(k + 0.2, freq[g], 0.4, label=f"frequency in {codes.shape[0]} draws")
    ax.set_title(f"group {g}", fontsize=9)
    ax.set_xlabel("code")
axes[0, 0].set_ylabel("probability")
axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
fig.suptitle("Test image 0: draws vs the exact posterior", fontsize=10)
fig.tight_layout()
save(fig, "08_one_posterior")

# %%
# PSIS-LOO, and why it is not a held-out likelihood here
# ------------------------------------------------------
# ``az.loo`` (Pareto-smoothed importance sampling) on :math:`\log p(x_{ij} \mid z_i)`, and
# ``az.compare`` of the two runs. Each observation has its own latent here, so this compares
# the decoders' fit *given posterior codes*; it is **not** a held-out :math:`\log p(x)`, which
# is printed next to it (exact, by enumeration). At the full-size settings the two disagree:
# LOO prefers the collapsed ``relaxed`` model (whose codes carry no information, so its
# :math:`\log p(x_{ij} \mid z_i)` barely depends on the sampled code and PSIS is stable), the
# exact :math:`\log p(x)` prefers the ``analytic`` one by several nats, and 15% of the
# ``analytic`` model's pixels have a Pareto :math:`k` above 0.7 (unreliable LOO there).

print("PSIS-LOO on log p(x_ij | z_i) per pixel (not a held-out log p(x)):")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Pareto-k warnings are reported in the table below
    loos = {kl: az.loo(d, pointwise=True) for kl, d in idatas.items()}
    compare = az.compare(idatas)
for kl, loo in loos.items():
    k = np.asarray(loo.pareto_k)
    exact = models[kl][1]["test_nll_exact"]
    print(
        f"  kl={kl:>8}: elpd_loo {loo.elpd_loo:9.1f} (se {loo.se:.1f}), "
        f"p_loo {loo.p_loo:6.1f}, Pareto k > 0.7: {int((k > 0.7).sum())}/{k.size};\n"
        "              exact test log p(x) per datum "
        f"{'n/a' if exact is None else f'{-exact:.2f}'}"
    )
print(compare[["rank", "elpd_loo", "elpd_diff", "weight"]].to_string())
loo_best = compare.index[0]
exact = {kl: m["test_nll_exact"] for kl, (_, m) in models.items()}
if all(v is not None for v in exact.values()):
    exact_best = min(exact, key=exact.get)
    verdict = "agree" if loo_best == exact_best else "DISAGREE"
    print(
        f"LOO prefers kl={loo_best}, the exact held-out log p(x) prefers kl={exact_best}: "
        f"they {verdict}.\nPareto k > 0.7 marks pixels where PSIS-LOO is unreliable."
    )

# %%
# ArviZ's own plots of the same: the Pareto :math:`k` of every pixel of every test image for
# each model (``az.plot_khat``; above the 0.7 line PSIS-LOO is unreliable), and the model
# comparison (``az.plot_compare``).

fig, axes = plt.subplots(1, 3, figsize=(13, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.2]})
for ax, (kl, loo) in zip(axes, loos.items()):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_khat(loo, ax=ax, show_bins=False)
    ax.axhline(0.7, color="C3", ls="--", lw=1)  # above: PSIS-LOO unreliable
    ax.set_title(f"Pareto k, kl={kl}", fontsize=10)
    ax.set_xlabel("pixel of a test image (observation x pixel)", fontsize=9)
az.plot_compare(compare, ax=axes[2], legend=False)
axes[2].set_title("az.compare (elpd_loo)", fontsize=10)
fig.tight_layout()
save(fig, "08_loo")

# %%
# Latent usage and what the codes know about the digit
# -----------------------------------------------------
# From :mod:`pyro_dvae.analysis`: the aggregate posterior :math:`\bar q(z_g = k) = \frac{1}{n}
# \sum_n q(z_g = k \mid x_n)` per group and its perplexity :math:`\exp H(\bar q)` (effective
# categories in use; 1 = a collapsed group), the mean entropy of :math:`q(z \mid x)`, and the
# mutual information :math:`I(\text{label}; z_g)` between the digit label and each group (at
# most :math:`\log 10` nats).

print("latent usage (aggregate posterior) and information about the digit label:")
results = {}
for kl, d in idatas.items():
    probs = probs_from_inference_data(d)
    usage = code_usage(probs)
    perplexity = np.exp(-(usage * np.log(np.clip(usage, 1e-300, None))).sum(-1))
    entropy = posterior_entropy(probs).sum(-1).mean()
    d_labels = d.constant_data["label"].values
    joint = code_label_joint(probs, d_labels, num_labels=10)
    mi = [mutual_information(j) for j in joint]
    results[kl] = {"perplexity": perplexity.tolist(), "entropy": float(entropy), "mi": mi}
    print(
        f"  kl={kl:>8}: categories in use per group {np.round(perplexity, 2).tolist()}, "
        f"mean H[q(z|x)] {entropy:.2f} nats,\n              I(label; z_g) "
        f"{np.round(mi, 3).tolist()} nats (H(label) <= {np.log(10):.2f})"
    )

# %%
# The same for the ``analytic`` model as pictures (:mod:`pyro_dvae.plots`): how often each code
# is used per group, and the joint distribution of code and digit label (a group that knows the
# digit has one dominant code per label).

model = models["analytic"][0]
probs = probs_from_inference_data(idata)
d_labels = idata.constant_data["label"].values
plot_code_usage(probs, out / "08_code_usage.png")
plot_code_vs_label(probs, d_labels, out / "08_code_vs_label.png")

# %%
# Latent traversals: the code of one test image, with one group at a time set to each of its
# values and decoded. A group that matters changes the image; a collapsed one does not.

plot_latent_traversals(model, x[:1], data.image_shape, out / "08_traversals.png")
print(f"figures and exports under {out}/")

# %%
# Running it from Python
# ----------------------
# ``python tutorials/08_posterior_analysis_arviz.py --help`` lists the options. From Python,
# ``main(args)`` runs this file with the given arguments and returns its variables
# (``idatas``: the two exports, ``loos``, ``compare``, ``results``, ...).


def main(args: argparse.Namespace) -> dict:
    """Run this tutorial with ``args`` (as from :func:`parse_args`); returns its variables."""
    return runpy.run_path(__file__, init_globals={"args": args})
