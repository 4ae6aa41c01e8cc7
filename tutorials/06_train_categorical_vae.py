"""Tutorial 6: training a categorical VAE: KL choices, straight-through, temperature annealing.

What it shows: four training runs of the same :class:`pyro_dvae.models.DiscreteVAE` (``N x K``
one-hot latents, MLP encoder and decoder) on the embedded 8x8 digits (or on MNIST with
``--data-dir DIR``), each with :func:`pyro_dvae.training.train`, evaluated on the test set in
nats per datum (lower is better):

* ``relaxed KL``: :class:`~pyro_dvae.infer.GumbelSoftmaxELBO` with ``kl="relaxed"``: the prior
  is replaced by its Concrete counterpart, and the objective
  ``E_q[log p(x | y) + log p_tau(y) - log q_tau(y | x)]`` is a true lower bound on the
  *relaxed* model (Maddison et al. 2017, arXiv:1611.00712).
* ``analytic KL``: reconstruction from the relaxed sample **minus** the exact discrete
  ``KL(q(z | x) || p(z))`` (Jang et al. 2017, arXiv:1611.01144); not a bound on the relaxed
  model, but it matches the discrete ELBO ``E_q[log p(x | z)] - KL(q || p)`` as ``tau -> 0``.
* ``straight-through``: one-hot samples forward, relaxed gradients backward (analytic KL).
* ``annealed``: analytic KL with ``tau = max(tau_min, tau0 * exp(-r * t))`` (Jang et al.'s
  schedule, :class:`~pyro_dvae.infer.ExponentialDecayTemperature`).

Every run is evaluated with the *discrete* model, whatever it was trained with: the test
``-ELBO`` (:func:`~pyro_dvae.infer.discrete_elbo`, an upper bound on ``-log p(x)``), the
importance-weighted estimate (:func:`~pyro_dvae.infer.iwae_log_likelihood`, a tighter upper
bound on ``-log p(x)`` in expectation) and, when the latent space has at most ``2**20`` codes,
the exact ``-log p(x)`` (:func:`~pyro_dvae.infer.exact_log_likelihood`). The ordering
``exact <= IWAE <= -ELBO`` is checked for every run. The gap ``-ELBO - exact`` is the
``KL(q(z | x) || p(z | x))`` left by the encoder.

Run ``python tutorials/06_train_categorical_vae.py`` (about a minute per run on two CPU cores
at the defaults); ``--data-dir DIR`` trains on MNIST (IDX files) instead.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pyro_dvae.training import TrainConfig, train  # noqa: E402

smoke_test = "CI" in os.environ


def run_configs(args: argparse.Namespace) -> dict[str, TrainConfig]:
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
    steps = args.max_steps or args.epochs * -(-args.num_train // args.batch_size)
    # anneal from tau0 to tau_min over the run, updating every `every` steps
    every = max(1, steps // 20)
    rate = float(np.log(args.temperature / args.tau_min) / max(1, steps - every))
    return {
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


def fmt(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.data_dir is None:
        args.num_train = 1397  # the embedded digits' training split
    else:
        args.num_train = 50_000  # MNIST, split 50k / 10k / 10k
    configs = run_configs(args)
    results = {}
    print(
        f"dataset {'mnist' if args.data_dir else 'digits'}, latent {args.latent}, "
        f"{args.epochs} epochs (max steps {args.max_steps}), tau0 {args.temperature}; "
        "test set, nats per datum"
    )
    header = (
        f"{'run':>17} {'-ELBO':>8} {'IWAE NLL':>9} {'exact NLL':>10} {'-ELBO - NLL':>12} "
        f"{'final tau':>10} {'steps':>6} {'seconds':>8}"
    )
    print(header)
    for name, config in configs.items():
        slug = name.replace(" ", "_").replace("-", "_")
        # per-run metrics.json, checkpoint and plots (skipped in smoke mode: plotting is slow)
        run_dir = None if smoke_test else out / slug
        m = train(config, out_dir=run_dir, progress=False, force=True)
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
        f"(and, outside smoke mode, per-run metrics, checkpoints and plots) under {out}/"
    )

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, m in results.items():
        loss = np.asarray(m["history"]["loss"])
        window = max(1, min(50, len(loss) // 10))
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        axes[0].plot(smooth, label=name)
        axes[1].plot(
            m["history"]["valid_step"], m["history"]["valid_nelbo"], "o-", ms=2, label=name
        )
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss (nats/datum)")
    axes[0].set_title("Training objective (differs by KL choice)")
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("validation -ELBO (discrete)")
    axes[1].set_title("Validation -ELBO, same metric for all")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "06_training_curves.png", dpi=100)
    plt.close(fig)
    print(f"figure: {out / '06_training_curves.png'}")
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tutorials/06_train_categorical_vae")
    p.add_argument("--data-dir", default=None, help="MNIST IDX directory (default: digits)")
    p.add_argument("--latent", default=None, help="default 4x8 (digits), 20x10 (MNIST)")
    p.add_argument("--epochs", type=int, default=None, help="default 100 (digits), 10 (MNIST)")
    p.add_argument("--max-steps", type=int, default=None if not smoke_test else 5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=None,
        help="encoder widths; default 256 128 (32 in smoke mode)",
    )
    p.add_argument("--temperature", type=float, default=1.0, help="initial temperature tau0")
    p.add_argument("--tau-min", type=float, default=0.5)
    p.add_argument("--iwae-samples", type=int, default=1000 if not smoke_test else 10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    mnist = args.data_dir is not None
    if args.latent is None:
        args.latent = "20x10" if mnist else ("2x4" if smoke_test else "4x8")
    if args.epochs is None:
        args.epochs = 1 if smoke_test else (10 if mnist else 100)
    if args.hidden is None:
        args.hidden = [32] if smoke_test else [256, 128]
    return args


if __name__ == "__main__":
    main(parse_args())
