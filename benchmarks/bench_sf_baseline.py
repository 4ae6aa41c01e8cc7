"""Per-site against per-position decaying-average baselines of ScoreFunctionELBO (issue #19).

Registers the two averages under their own estimator names, ``sf-average-site`` (the default of
``score-function-baseline``, ``baseline_average="site"``) and ``sf-average-position`` (Pyro's
per-position average, ``baseline_average="position"``), and runs ``pyro-dvae compare`` with the
arguments given here, so both get the comparison's gradient variance figures against the exact
gradient (same data, model, seeds, steps and diagnostic batches)::

    OMP_NUM_THREADS=1 python benchmarks/bench_sf_baseline.py --steps 500 --seeds 3 \\
        --latent 4x4 --encoder-hidden 128 --diag-batch 100 --diag-samples 32 \\
        --diag-at 0.004,0.02,0.1,0.5 --eval-size 300 --eval-every 50 --iwae-samples 50 \\
        --out /tmp/sf-baseline [--carried-state]

The comparison's diagnostics draw their estimates one after another on one fixed batch; each
starts from the baseline state training left at that step (``gradient_estimates`` restores
Pyro's param store before each). ``--carried-state`` brings back the diagnostic before that fix,
whose estimates moved the averages between them: over that batch a per-position average learns
each datum's own cost, which it cannot do under shuffled training batches. ``--fresh-state``
(the old way to get every estimate from training's state) is accepted and is now the default.

``--paired`` compares the two averages at the same parameters instead: it trains with each
average (digits, latent 4x4, encoder 128, batch 100), and at each checkpoint warms up both
averages from zero on ``--warmup`` shuffled training batches (no parameter update), then
measures each one's variance on the first 100 training points, every estimate from the
warmed-up state::

    OMP_NUM_THREADS=1 python benchmarks/bench_sf_baseline.py --paired --steps 500 --seeds 3
"""

from __future__ import annotations

import sys

import pyro_dvae.training._config as train_config
from pyro_dvae.cli.main import main
from pyro_dvae.infer import ScoreFunctionELBO
from pyro_dvae.infer.registry import register_estimator

for average in ("site", "position"):
    name = f"sf-average-{average}"
    train_config.ESTIMATORS = (*train_config.ESTIMATORS, name)  # TrainConfig's known names
    register_estimator(
        name,
        ScoreFunctionELBO,
        options=("num_particles", "max_plate_nesting"),
        fixed={"baseline": "decaying_average", "baseline_average": average},
        summary=f"REINFORCE with a per-{average} decaying-average baseline",
    )


def _carried_state() -> None:
    """The diagnostic before the fix: its estimates chain the decaying averages (each estimate
    starts from the state the previous one left; the recorder restores training's state after
    the last)."""
    from contextlib import contextmanager

    from pyro_dvae.diagnostics import gradients

    preserved = gradients.preserved_param_store

    @contextmanager
    def carried():
        with preserved():  # restored after the last estimate only
            yield lambda: None

    gradients.preserved_param_store = carried


_PREFIX = "__baseline_avg_downstream_cost_"


def _paired(steps: int, seeds: int, warmup: int, samples: int) -> None:
    """Both averages at the same parameters, along training runs of each (see the docstring)."""
    import pyro
    import torch

    from pyro_dvae.comparison.recorder import preserved_training_state
    from pyro_dvae.data import load_dataset
    from pyro_dvae.diagnostics import exact_gradient, gradient_diagnostics
    from pyro_dvae.diagnostics.gradients import _preserved_grads
    from pyro_dvae.training import TrainConfig, train

    data = load_dataset("digits")
    x_diag = data.train[:100]
    checkpoints = sorted({2, 10, max(1, steps // 10), max(1, steps // 2), steps})
    print("trained with | step | variance (encoder) per-position | per-site | ratio site/position")
    for trained in ("site", "position"):
        for seed in range(seeds):

            def measure(step, model, elbo, trained=trained, seed=seed):
                if step not in checkpoints:
                    return False
                out = {}
                with preserved_training_state(seed=1000 + step):
                    exact = exact_gradient(model.model, model.guide, x_diag, params=model)
                    g = torch.Generator().manual_seed(step)
                    for average in ("position", "site"):
                        store = pyro.get_param_store()
                        for key in [k for k in store.keys() if k.startswith(_PREFIX)]:
                            del store[key]
                        sf = ScoreFunctionELBO("decaying_average", baseline_average=average)
                        with _preserved_grads(model.parameters()):  # no parameter update
                            for _ in range(warmup):  # shuffled training batches
                                idx = torch.randperm(len(data.train), generator=g)[:100]
                                sf.loss_and_grads(model.model, model.guide, data.train[idx])
                        d = gradient_diagnostics(
                            sf, model.model, model.guide, x_diag, samples, params=model, exact=exact
                        )
                        out[average] = d["encoder"].variance
                ratio = out["site"] / out["position"]
                print(
                    f"{trained} (seed {seed}) | {step} | {out['position']:.4g} | "
                    f"{out['site']:.4g} | {ratio:.3f}",
                    flush=True,
                )
                return False

            cfg = TrainConfig(
                estimator=f"sf-average-{trained}",
                latent="4x4",
                encoder_hidden=(128,),
                batch_size=100,
                max_steps=steps,
                epochs=1 + steps * 100 // len(data.train),
                seed=seed,
                iwae_samples=10,
            )
            train(cfg, progress=False, callback=measure)


if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--paired" in argv or "--smoke" in argv:
        import argparse

        import torch

        p = argparse.ArgumentParser(description="the --paired measurement (see the docstring)")
        p.add_argument("--paired", action="store_true", help="this mode")
        p.add_argument("--smoke", action="store_true", help="a few steps, to check it runs")
        p.add_argument("--steps", type=int, default=500, help="training steps per run")
        p.add_argument("--seeds", type=int, default=3, help="runs per average")
        p.add_argument("--warmup", type=int, default=100, help="warm-up batches per checkpoint")
        p.add_argument("--samples", type=int, default=32, help="gradient estimates")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        a = p.parse_args(argv)
        torch.set_num_threads(a.threads)
        if a.smoke:
            a.steps, a.seeds, a.warmup, a.samples = 3, 1, 2, 2
        _paired(a.steps, a.seeds, a.warmup, a.samples)
        sys.exit(0)
    if "--fresh-state" in argv:  # now the default
        argv.remove("--fresh-state")
    if "--carried-state" in argv:
        argv.remove("--carried-state")
        _carried_state()
    if "--estimators" not in argv:
        argv = ["--estimators", "score-function,sf-average-position,sf-average-site", *argv]
    sys.exit(main(["compare", *argv]))
