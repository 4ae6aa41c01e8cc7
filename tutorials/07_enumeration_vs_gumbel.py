r"""Tutorial 7: exact enumeration vs Gumbel-softmax on the same model
==================================================================

When the latent space is small enough to enumerate (:math:`K^N` codes, tutorial 1), the
expectation over :math:`q(z \mid x)` in the ELBO can be **summed** instead of sampled, giving
the exact value and gradient of the discrete ELBO; and :math:`\log p(x)` itself can be
summed, giving the exact test likelihood that every estimator can be scored by. This tutorial
uses that to compare, on the same :class:`~pyro_dvae.models.DiscreteVAE`, data, seeds and step
budget, the exact estimators against the relaxed ones of tutorials 5 and 6, on three axes:
likelihood, gradient quality, and time. It runs the comparison harness
(:func:`~pyro_dvae.comparison.run_comparison`, also ``pyro-dvae compare`` on the command line).
"""

# %%
# Setup
# -----
# Sizes are command-line options (``--help``); ``CI`` set shrinks them (smoke mode: a handful of
# steps on a 2x3 latent, so the tables below are those of barely trained models when this page
# is built with ``CI`` set).

import argparse
import os
import runpy
import sys
from pathlib import Path

import matplotlib.pyplot as plt

from pyro_dvae.comparison import CompareConfig, run_comparison, summarize, write_results
from pyro_dvae.training import TrainConfig
from pyro_dvae.utils.options import HelpFormatter

if "ipykernel" not in sys.modules:  # a notebook keeps its inline figures
    plt.switch_backend("Agg")
smoke_test = "CI" in os.environ


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=(
            "Tutorial 7: exact enumeration against Gumbel-softmax estimators on the digits: "
            "learning curves, exact test NLL and gradient bias and variance against the exact "
            "gradient."
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--out",
        default="runs/tutorials/07_enumeration_vs_gumbel",
        help="directory for the results and figures",
    )
    p.add_argument(
        "--estimators",
        default="exact,enumerate,gumbel-softmax:tau=1,gumbel-softmax:tau=0.5,st-gumbel",
        help="comma-separated estimator specs (see pyro_dvae.comparison.parse_spec)",
    )
    p.add_argument(
        "--latent",
        default="4x8" if not smoke_test else "2x3",
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
        "--steps",
        type=int,
        default=600 if not smoke_test else 6,
        help="training steps per run; smaller with CI set",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=3 if not smoke_test else 1,
        help="runs per estimator (seeds 0..N-1); smaller with CI set",
    )
    p.add_argument("--batch-size", type=int, default=100, help="training data points per step")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument(
        "--eval-size",
        type=int,
        default=200 if not smoke_test else 20,
        help="test points of the learning curves; smaller with CI set",
    )
    p.add_argument(
        "--iwae-samples",
        type=int,
        default=500 if not smoke_test else 10,
        help="importance samples per test datum of the IWAE NLL; smaller with CI set",
    )
    p.add_argument(
        "--diag-samples",
        type=int,
        default=32 if not smoke_test else 2,
        help="gradient estimates per diagnostic; smaller with CI set",
    )
    p.add_argument(
        "--diag-batch",
        type=int,
        default=50 if not smoke_test else 10,
        help="training points in the fixed diagnostic batch; smaller with CI set",
    )
    p.add_argument(
        "--diag-temperatures",
        type=float,
        nargs="+",
        default=[0.1, 0.25, 0.5, 1.0, 2.0] if not smoke_test else [0.5, 1.0],
        help=(
            "temperatures diagnosed for the relaxed estimators, space separated; smaller with CI "
            "set"
        ),
    )
    if "ipykernel" in sys.modules:  # a notebook kernel passes flags of its own
        return p.parse_known_args(argv)[0]
    return p.parse_args(argv)


def show_png(path: Path) -> None:
    """Show a figure that the library saved to ``path`` (on the page it appears below the cell)."""
    image = plt.imread(path)
    height, width = image.shape[:2]
    fig = plt.figure(figsize=(width / 100, height / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(image)
    ax.axis("off")


def fmt(stats: dict, digits: int = 2) -> str:
    """``mean +- sd`` of a :func:`~pyro_dvae.comparison.mean_sd` dict (``n/a`` if empty)."""
    if not stats or stats.get("mean") is None:
        return "n/a"
    sd = stats.get("sd")
    return f"{stats['mean']:.{digits}f}" + ("" if sd is None else f" +- {sd:.{digits}f}")


if __name__ == "__main__":  # a script, a notebook or a documentation page; main(args) below
    args = parse_args()
out = Path(args.out)
out.mkdir(parents=True, exist_ok=True)

# %%
# The estimators
# --------------
# * ``exact`` (:class:`~pyro_dvae.infer.ExactMarginalELBO`): the model gets the exact gradient
#   of :math:`\log p(x) = \log \sum_z p(x, z)`;
# * ``enumerate`` (:class:`~pyro_dvae.infer.EnumeratedELBO`): the ELBO
#
#   .. math:: \mathbb{E}_{q(z \mid x)}[\log p(x \mid z)] - \mathrm{KL}(q \,\|\, p)
#      = \sum_z q(z \mid x) \log p(x \mid z) - \mathrm{KL}(q \,\|\, p),
#
#   reconstruction minus KL, with the expectation over :math:`q` summed exactly: the exact value
#   and gradient of the discrete ELBO;
# * ``gumbel-softmax`` at two temperatures, and ``st-gumbel`` (straight-through): one relaxed
#   sample per datum, a biased gradient of the discrete ELBO (tutorial 5).
#
# Every run is scored by the exact test :math:`-\log p(x)`, its learning curve too, and every
# gradient is compared with the exact gradient of the discrete ELBO on a fixed batch
# (:func:`~pyro_dvae.diagnostics.gradient_diagnostics`).

base = TrainConfig(
    latent=args.latent,
    encoder_hidden=tuple(args.hidden),
    batch_size=args.batch_size,
    lr=args.lr,
    kl="analytic",
    iwae_samples=args.iwae_samples,
)
config = CompareConfig(
    base=base,
    steps=args.steps,
    seeds=tuple(range(args.seeds)),
    eval_size=args.eval_size,
    diag_samples=args.diag_samples,
    diag_batch=args.diag_batch,
    diag_temperatures=tuple(args.diag_temperatures),
)
print(
    f"digits, latent {args.latent}, {args.steps} steps x {args.seeds} seeds per estimator, "
    f"gradients from {args.diag_samples} estimates on {args.diag_batch} training points"
)
result = summarize(run_comparison(args.estimators, config, progress=False))
written = write_results(result, out, plots=True)  # JSON, CSV, Markdown and the figures below

# %%
# Likelihood and time
# -------------------
# The final exact test NLL per estimator (mean and SD over seeds), the test
# :math:`-\mathrm{ELBO}`, the median milliseconds per step, and the steps and seconds to reach
# a target NLL (the median over estimators of the final NLL). Enumeration costs grow like
# :math:`K^N` (tutorial 1); sampling costs do not.

target = result["target"]
print(f"likelihood and time (target {target['metric']} = {target['value']:.2f} nats):")
print(
    f"{'estimator':>24} {'exact test NLL':>15} {'test -ELBO':>15} {'ms/step':>13} "
    f"{'steps to target':>16} {'s to target':>13}"
)
for est in result["estimators"]:
    s = est["summary"]
    print(
        f"{est['spec']:>24} {fmt(s['test_nll_exact']):>15} {fmt(s['test_nelbo']):>15} "
        f"{fmt(s['ms_per_step'], 1):>13} {fmt(s['steps_to_target'], 0):>16} "
        f"{fmt(s['seconds_to_target'], 1):>13}"
    )
show_png(out / "learning_curves.png")

# %%
# Gradient quality
# ----------------
# For each estimator and parameter group (encoder, decoder), against the exact gradient
# :math:`g` of the discrete ELBO: the relative bias :math:`\|\mathbb{E}[\hat g] - g\| /
# \|g\|`, the relative standard deviation :math:`\sqrt{\operatorname{tr}\operatorname{Cov}[\hat
# g]} / \|g\|`, ``bias/se`` (about 1 when the bias is only Monte Carlo noise) and the cosine to
# the exact gradient. ``enumerate`` has neither bias nor variance; ``exact`` has no variance,
# and its decoder "bias" is by design: it follows :math:`\log p(x)`, the ELBO at its optimum,
# not the ELBO of the current encoder.

print("gradient of -ELBO vs the exact gradient (last diagnostic step, own temperature):")
print(
    f"{'estimator':>24} {'group':>8} {'rel. bias':>15} {'rel. SD':>15} {'bias/se':>11} "
    f"{'cosine':>15}"
)
for est in result["estimators"]:
    rows = est["gradients"]
    if not rows:
        continue
    last = max(r["step"] for r in rows)
    for r in (r for r in rows if r["step"] == last):
        print(
            f"{est['spec']:>24} {r['group']:>8} {fmt(r['rel_bias'], 3):>15} "
            f"{fmt(r['rel_sd'], 3):>15} {fmt(r['bias_noise'], 1):>11} "
            f"{fmt(r['cosine'], 3):>15}"
        )
        if est["spec"] == "enumerate":  # the exact gradient of the discrete ELBO
            assert r["rel_bias"]["mean"] < 1e-3 and r["rel_sd"]["mean"] < 1e-3, r

# %%
# Bias and variance against temperature
# -------------------------------------
# The relaxed estimators' encoder gradient over a temperature sweep. The spread rises steadily
# as :math:`\tau` decreases; the bias falls from large :math:`\tau` down to about
# :math:`\tau = 0.5`, below which the measured bias is mostly Monte Carlo noise of the
# high-variance estimate (``bias/se`` near its unbiased level; more ``--diag-samples`` push
# that floor down). This is tutorial 5's trade-off, measured on a real VAE's gradient.

print("temperature sweep of the relaxed gradients (encoder, last diagnostic step):")
print(f"{'estimator':>24} {'tau':>6} {'rel. bias':>15} {'rel. SD':>15} {'bias/se':>11}")
for est in result["estimators"]:
    rows = [r for r in est.get("temperature_sweep", []) if r["group"] == "encoder"]
    if not rows:
        continue
    last = max(r["step"] for r in rows)
    for r in (r for r in rows if r["step"] == last):
        print(
            f"{est['spec']:>24} {r['temperature']:>6} {fmt(r['rel_bias'], 3):>15} "
            f"{fmt(r['rel_sd'], 3):>15} {fmt(r['bias_noise'], 1):>11}"
        )
if (out / "gradient_vs_temperature.png").is_file():
    show_png(out / "gradient_vs_temperature.png")
print(
    f"wrote {len(written)} files (JSON, CSV, Markdown, learning curves, temperature "
    f"sweep)\nto {out}/"
)

# %%
# Running it from Python
# ----------------------
# ``python tutorials/07_enumeration_vs_gumbel.py --help`` lists the options. From Python,
# ``main(args)`` runs this file with the given arguments and returns its variables
# (``result``, the summarized comparison, ...).


def main(args: argparse.Namespace) -> dict:
    """Run this tutorial with ``args`` (as from :func:`parse_args`); returns its variables."""
    return runpy.run_path(__file__, init_globals={"args": args})
