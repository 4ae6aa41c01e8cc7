r"""Tutorial 6: training a categorical VAE: KL choices, straight-through, annealing
================================================================================

Tutorials 3 to 5 built the pieces: a variational posterior :math:`q_\phi(z \mid x)`, the ELBO,
and a relaxation that gives discrete latents a pathwise gradient. A **variational autoencoder**
puts them together: an encoder network outputs the logits of :math:`q_\phi(z \mid x)`, a decoder
network outputs the Bernoulli logits of :math:`p_\theta(x \mid z)`, and both are trained
together by stochastic gradient ascent on the ELBO.

With Gumbel-softmax there is a choice to make that the continuous case does not have: *which*
objective to differentiate, since the sample is relaxed but the prior and posterior are
discrete. This tutorial trains the same :class:`~pyro_dvae.models.DiscreteVAE` (:math:`N \times
K` one-hot latents, MLP encoder and decoder) four ways on the embedded 8x8 digits (or on MNIST
with ``--data-dir DIR``) with :func:`~pyro_dvae.training.train`, and evaluates every run with
the **discrete** model, in nats per datum (lower is better).
"""

# %%
# Setup
# -----
# Sizes are command-line options (``--help``); ``CI`` set shrinks them (smoke mode: a few
# training steps only, so the numbers below are those of barely trained models when this page
# is built with ``CI`` set).

import argparse
import json
import os
import runpy
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from pyro_dvae.data import load_dataset
from pyro_dvae.plots.images import montage
from pyro_dvae.training import TrainConfig, train
from pyro_dvae.utils.options import HelpFormatter

if "ipykernel" not in sys.modules:  # a notebook keeps its inline figures
    plt.switch_backend("Agg")
smoke_test = "CI" in os.environ


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Tutorial 6: training a categorical VAE with Gumbel-softmax four ways (relaxed KL, "
            "analytic KL, straight-through, annealed) and scoring each with the discrete model."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--out",
        default="runs/tutorials/06_train_categorical_vae",
        help="directory for the figures, summary and (outside smoke mode) the runs",
    )
    p.add_argument(
        "--data-dir", default=None, help="MNIST IDX directory (default: the embedded digits)"
    )
    p.add_argument(
        "--latent",
        default=None,
        help="latent 'NxK' (default: 4x8 on digits, 20x10 on MNIST, 2x4 in smoke mode)",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs (default: 100 on digits, 10 on MNIST, 1 in smoke mode)",
    )
    p.add_argument(
        "--max-steps",
        type=int,
        default=None if not smoke_test else 5,
        help="stop each run after this many steps (default: none; 5 in smoke mode)",
    )
    p.add_argument("--batch-size", type=int, default=100, help="training data points per step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=None,
        help="encoder hidden widths, space separated (default: 256 128; 32 in smoke mode)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="initial temperature tau0")
    p.add_argument(
        "--tau-min", type=float, default=0.5, help="final temperature of the annealed run"
    )
    p.add_argument(
        "--iwae-samples",
        type=int,
        default=1000 if not smoke_test else 10,
        help="importance samples per test datum of the IWAE NLL; smaller with CI set",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of every run")
    if "ipykernel" in sys.modules:  # a notebook kernel passes flags of its own
        args = p.parse_known_args(argv)[0]
    else:
        args = p.parse_args(argv)
    mnist = args.data_dir is not None
    if args.latent is None:
        args.latent = "20x10" if mnist else ("2x4" if smoke_test else "4x8")
    if args.epochs is None:
        args.epochs = 1 if smoke_test else (10 if mnist else 100)
    if args.hidden is None:
        args.hidden = [32] if smoke_test else [256, 128]
    return args


def save(fig, name: str) -> None:
    """Save a figure under ``--out`` (on the documentation page it appears below the cell)."""
    fig.savefig(out / f"{name}.png", dpi=100)


if __name__ == "__main__":  # a script, a notebook or a documentation page; main(args) below
    args = parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)
data = load_dataset("mnist" if args.data_dir else "digits", args.data_dir)
num_train = len(data.train)

# %%
# Four ways to train
# ------------------
# * ``relaxed KL``: :class:`~pyro_dvae.infer.GumbelSoftmaxELBO` with ``kl="relaxed"``. The prior
#   is replaced by its Concrete counterpart :math:`p_\tau(y)`, and the objective
#
#   .. math:: \mathbb{E}_{q_\tau(y \mid x)}\big[\log p(x \mid y) + \log p_\tau(y)
#      - \log q_\tau(y \mid x)\big]
#
#   is a true lower bound on the *relaxed* model (Maddison et al. 2017, arXiv:1611.00712).
# * ``analytic KL``: reconstruction from the relaxed sample **minus** the exact discrete
#   :math:`\mathrm{KL}(q(z \mid x) \,\|\, p(z))` (Jang et al. 2017, arXiv:1611.01144). Not a
#   bound on the relaxed model, but it tends to the discrete ELBO
#   :math:`\mathbb{E}_q[\log p(x \mid z)] - \mathrm{KL}(q \,\|\, p)` as :math:`\tau \to 0`.
# * ``straight-through``: one-hot samples forward, relaxed gradients backward (analytic KL).
# * ``annealed``: analytic KL with :math:`\tau_t = \max(\tau_{\min}, \tau_0 e^{-r t})` (Jang et
#   al.'s schedule, :class:`~pyro_dvae.infer.ExponentialDecayTemperature`), from
#   :math:`\tau_0` to :math:`\tau_{\min}` over the run.

common = dict(
    dataset="mnist" if args.data_dir else "digits",
    data_dir=args.data_dir,
    latent=args.latent,
    epochs=args.epochs,
    max_steps=args.max_steps,
    batch_size=args.batch_size,
    lr=args.lr,
    seed=args.seed,
    encoder_hidden=tuple(args.hidden),
    iwae_samples=args.iwae_samples,
    temperature=args.temperature,
)
total_steps = args.max_steps or args.epochs * -(-num_train // args.batch_size)
every = max(1, total_steps // 20)  # anneal every `every` steps, from tau0 to tau_min
rate = float(np.log(args.temperature / args.tau_min) / max(1, total_steps - every))
configs = {
    "relaxed KL": TrainConfig(estimator="gumbel-softmax", kl="relaxed", **common),
    "analytic KL": TrainConfig(estimator="gumbel-softmax", kl="analytic", **common),
    "straight-through": TrainConfig(estimator="st-gumbel", kl="analytic", **common),
    "annealed": TrainConfig(
        estimator="gumbel-softmax",
        kl="analytic",
        schedule="exponential",
        anneal_rate=rate,
        anneal_every=every,
        tau_min=args.tau_min,
        **common,
    ),
}

# %%
# Training, and evaluating with the discrete model
# ------------------------------------------------
# Whatever a run was trained with, it is evaluated on the test set with the *discrete* model:
#
# * the test :math:`-\mathrm{ELBO}` (:func:`~pyro_dvae.infer.discrete_elbo`), an upper bound on
#   :math:`-\log p(x)`;
# * the importance-weighted estimate (:func:`~pyro_dvae.infer.iwae_log_likelihood`), a tighter
#   upper bound in expectation;
# * when the latent space has at most :math:`2^{20}` codes, the exact :math:`-\log p(x)`
#   (:func:`~pyro_dvae.infer.exact_log_likelihood`).
#
# The ordering exact :math:`\le` IWAE :math:`\le -\mathrm{ELBO}` is checked for every run, and
# the gap :math:`-\mathrm{ELBO} - (-\log p(x))` is the :math:`\mathrm{KL}(q(z \mid x) \,\|\,
# p(z \mid x))` left by the encoder (tutorial 3). During the ``analytic KL`` run a callback keeps
# the reconstructions of a few test images, and decodes a fixed set of prior codes, at a few
# steps along the way.


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


x_show = data.test[:8]
snapshot_steps = sorted({max(1, int(total_steps * f)) for f in (0.02, 0.1, 0.3, 1.0)})
snapshots = {}
torch.manual_seed(args.seed)


def snapshot(step, model, elbo):
    """Keep reconstructions and decoded prior samples at a few steps (training callback)."""
    if step in snapshot_steps:
        with torch.no_grad():
            if "z_prior" not in snapshots:
                snapshots["z_prior"] = model.sample_prior(8)
            recon = model.reconstruct(x_show)
            samples = model.mean(snapshots["z_prior"])
        snapshots[step] = (recon.numpy(), samples.numpy())


print(
    f"dataset {'mnist' if args.data_dir else 'digits'}, latent {args.latent}, "
    f"{args.epochs} epochs (max steps {args.max_steps}), tau0 {args.temperature}; "
    "test set, nats per datum"
)
print(
    f"{'run':>17} {'-ELBO':>8} {'IWAE NLL':>9} {'exact NLL':>10} {'-ELBO - NLL':>12} "
    f"{'final tau':>10} {'steps':>6} {'seconds':>8}"
)
results = {}
for name, config in configs.items():
    slug = name.replace(" ", "_").replace("-", "_")
    # per-run metrics.json, checkpoint and plots (skipped in smoke mode: plotting is slow)
    run_dir = None if smoke_test else out / slug
    callback = snapshot if name == "analytic KL" else None
    m = train(config, out_dir=run_dir, progress=False, force=True, callback=callback)
    results[name] = m
    gap = None if m["test_nll_exact"] is None else m["test_nelbo"] - m["test_nll_exact"]
    print(
        f"{name:>17} {m['test_nelbo']:>8.2f} {m['test_nll_iwae']:>9.2f} "
        f"{fmt(m['test_nll_exact']):>10} {fmt(gap):>12} {fmt(m['final_temperature']):>10} "
        f"{m['steps']:>6} {m['train_seconds']:>8.1f}"
    )
    if m["test_nll_exact"] is not None:
        # IWAE is a Monte Carlo estimate: allow a little noise around the exact value
        ok = m["test_nll_exact"] <= m["test_nll_iwae"] + 0.05 <= m["test_nelbo"] + 0.1
        if not ok:
            print(f"  note: bound ordering exact <= IWAE <= -ELBO not met for {name!r}")
summary = {
    name: {k: m[k] for k in ("test_nelbo", "test_nll_iwae", "test_nll_exact", "steps")}
    for name, m in results.items()
}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
best = min(results, key=lambda n: results[n]["test_nll_iwae"])
print(
    f"best IWAE NLL: {best} ({results[best]['test_nll_iwae']:.2f} nats); summary.json "
    f"(and, outside smoke mode,\nper-run metrics, checkpoints and plots) under {out}/"
)

# %%
# The training curves. The training objectives differ by KL choice (left: ``relaxed KL``
# optimizes a different quantity, so its curve is not comparable), while the validation
# :math:`-\mathrm{ELBO}` of the discrete model is the same metric for all (right).

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), constrained_layout=True)
for name, m in results.items():
    loss = np.asarray(m["history"]["loss"])
    window = max(1, min(50, len(loss) // 10))
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    axes[0].plot(smooth, label=name)
    axes[1].plot(m["history"]["valid_step"], m["history"]["valid_nelbo"], "o-", ms=4, label=name)
axes[0].set_xlabel("step")
axes[0].set_ylabel("training loss (nats/datum)")
axes[0].set_title("Training objective (differs by KL choice)")
axes[1].set_xlabel("step")
axes[1].set_ylabel("validation -ELBO (discrete)")
axes[1].set_title("Validation -ELBO, same metric for all")
for ax in axes:
    ax.legend(fontsize=8)
save(fig, "06_training_curves")

# %%
# Reconstructions and samples during training
# -------------------------------------------
# The ``analytic KL`` run at a few steps: the top row shows test images, each row below their
# reconstructions (decoded mean of :math:`p(x \mid z)` at the mode of :math:`q(z \mid x)`), and
# on the right the same eight prior codes decoded by the decoder of that step. Early on the
# decoder outputs the average image; the codes become digits as the encoder and decoder agree.

shape = data.image_shape
steps = [s for s in snapshot_steps if s in snapshots]
if shape is not None and steps:
    fig, axes = plt.subplots(
        len(steps) + 1, 2, figsize=(10, 0.75 * (len(steps) + 1) + 0.5), constrained_layout=True
    )
    axes[0, 0].imshow(montage(x_show.numpy(), shape, 8), cmap="gray_r", vmin=0, vmax=1)
    axes[0, 0].set_title("test images, then their reconstructions", fontsize=10)
    axes[0, 1].axis("off")
    axes[1, 1].set_title("decoded prior samples (the same 8 codes)", fontsize=10)
    for row, step in enumerate(steps, start=1):
        recon, samples = snapshots[step]
        axes[row, 0].imshow(montage(recon, shape, 8), cmap="gray_r", vmin=0, vmax=1)
        axes[row, 1].imshow(montage(samples, shape, 8), cmap="gray_r", vmin=0, vmax=1)
        axes[row, 0].set_ylabel(f"step {step}", rotation=0, ha="right", va="center")
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    save(fig, "06_during_training")
print(f"figures: {out}/06_*.png")

# %%
# Running it from Python
# ----------------------
# ``python tutorials/06_train_categorical_vae.py --help`` lists the options (``--data-dir DIR``
# trains on MNIST IDX files instead). From Python, ``main(args)`` runs this file with the given
# arguments and returns its variables (``results``, ``summary``, ...).


def main(args: argparse.Namespace) -> dict:
    """Run this tutorial with ``args`` (as from :func:`parse_args`); returns its variables."""
    return runpy.run_path(__file__, init_globals={"args": args})
