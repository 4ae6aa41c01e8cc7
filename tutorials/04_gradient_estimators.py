"""Tutorial 4: gradient estimators, score function vs pathwise, on a Gaussian latent.

We want ``grad_phi E_{q_phi(z)}[f(z)]`` for ``q_phi = Normal(mu, sigma)``. Two unbiased
estimators from one sample ``z ~ q``:

* **score function** (REINFORCE, likelihood ratio): ``f(z) * grad_phi log q_phi(z)``. Needs only
  ``log q``; works for discrete ``z``.
* **pathwise** (reparameterization): write ``z = mu + sigma * eps`` with ``eps ~ Normal(0, 1)``,
  then ``grad_phi f(mu + sigma * eps)``. Needs a differentiable ``f`` and a reparameterizable q.

What the script measures (means and per-sample variances; every mean is compared with the
closed-form gradient):

* Part A, by hand with torch: ``f(z) = (z - c)^2``, where ``d/dmu E[f] = 2 (mu - c)`` exactly.
  The score-function variance is orders of magnitude larger and grows as ``sigma`` shrinks
  (its ``grad log q`` term scales like ``1 / sigma``), while the pathwise variance stays small.
* Part B, the same comparison through Pyro's inference machinery on an ELBO: prior
  ``z ~ Normal(0, I_D)``, likelihood ``x ~ Normal(z, I_D)``, guide ``Normal(loc, exp(log_scale))``.
  The loss ``-ELBO`` has exact gradients ``2 loc - x`` and ``2 exp(2 log_scale) - 1``. Pathwise:
  ``pyro.infer.Trace_ELBO``; score function: :class:`pyro_dvae.infer.ScoreFunctionELBO`
  with the guide's Normal marked non-reparameterizable (``has_rsample_(False)``), without and
  with a decaying-average baseline; gradients sampled with
  :func:`pyro_dvae.diagnostics.gradient_estimates`. As the latent dimension ``D`` grows, the
  score-function variance of one coordinate's gradient grows (the whole cost multiplies every
  coordinate's score), the pathwise variance does not.

Run ``python tutorials/04_gradient_estimators.py`` (add ``--out DIR`` for the figure's folder).
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from pyro.infer import Trace_ELBO  # noqa: E402

from pyro_dvae.diagnostics import compare_gradients, gradient_estimates  # noqa: E402
from pyro_dvae.infer import ScoreFunctionELBO  # noqa: E402

smoke_test = "CI" in os.environ


def part_a(args) -> list[tuple]:
    """Both estimators of d/dmu E[(z - c)^2] written out, vectorized over many samples."""
    c, mu0, n = args.target, 0.0, args.hand_samples
    print(
        f"Part A: d/dmu E_q[(z - {c})^2] at mu = {mu0}, exact = {2 * (mu0 - c):.3f}; "
        f"{n} single-sample estimates each"
    )
    print(f"{'sigma':>6} {'estimator':>15} {'mean':>9} {'variance':>11}")
    rows = []
    for sigma in args.sigmas:
        # one copy of mu per sample, so that autograd returns every per-sample gradient at once
        mu = torch.full((n,), mu0, requires_grad=True)
        z = mu + sigma * torch.randn(n)  # pathwise: z = mu + sigma * eps, eps ~ Normal(0, 1)
        f = (z - c) ** 2
        (per_sample_path,) = torch.autograd.grad(f.sum(), mu, retain_graph=True)
        # score function: f(z) * d/dmu log q(z), the sample z held fixed (no gradient through it)
        log_q = dist.Normal(mu, sigma).log_prob(z.detach())
        (per_sample_sf,) = torch.autograd.grad((f.detach() * log_q).sum(), mu)
        for name, g in (("pathwise", per_sample_path), ("score function", per_sample_sf)):
            rows.append((sigma, name, float(g.mean()), float(g.var())))
            print(f"{sigma:>6} {name:>15} {rows[-1][2]:>9.3f} {rows[-1][3]:>11.2f}")
    return rows


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


def part_b(args) -> list[tuple]:
    estimators = {
        "pathwise": (lambda: Trace_ELBO(), True),
        "score function": (lambda: ScoreFunctionELBO(baseline="none"), False),
        "SF + avg baseline": (lambda: ScoreFunctionELBO(baseline="decaying_average"), False),
    }
    print(
        f"\nPart B: gradient of -ELBO, Gaussian latent of dimension D, {args.samples} "
        "single-sample estimates; exact d/dloc_0 = -1, d/dlog_scale_0 = -0.5"
    )
    print(
        f"{'D':>4} {'estimator':>18} {'mean dloc_0':>12} {'var dloc_0':>11} "
        f"{'mean dls_0':>11} {'var dls_0':>10} {'bias/se':>8}"
    )
    rows = []
    for d in args.dims:
        for name, (make, reparam) in estimators.items():
            pyro.clear_param_store()
            model, guide, x, exact = elbo_problem(d, reparam)
            elbo = make()
            if name.startswith("SF +"):  # let the moving-average baseline settle first
                gradient_estimates(elbo, model, guide, x, num_samples=args.warmup)
            est = gradient_estimates(
                elbo, model, guide, x, num_samples=args.samples, groups=lambda key: key
            )
            diag = compare_gradients(est, exact)
            loc, ls = est["loc"][:, 0], est["log_scale"][:, 0]
            z = diag["loc"].bias / diag["loc"].bias_se
            rows.append(
                (d, name, float(loc.mean()), float(loc.var()), float(ls.mean()), float(ls.var()))
            )
            print(
                f"{d:>4} {name:>18} {rows[-1][2]:>12.3f} {rows[-1][3]:>11.2f} "
                f"{rows[-1][4]:>11.3f} {rows[-1][5]:>10.2f} {z:>8.2f}"
            )
    print(
        "(bias/se: norm of the mean error over its standard error, O(1) for an unbiased estimator)"
    )
    return rows


def main(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pyro.set_rng_seed(args.seed)
    a = part_a(args)
    b = part_b(args)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for name, marker in (("pathwise", "o-"), ("score function", "s-")):
        pts = [(r[0], r[3]) for r in a if r[1] == name]
        axes[0].loglog([p[0] for p in pts], [p[1] for p in pts], marker, label=name)
    axes[0].set_xlabel("sigma")
    axes[0].set_ylabel("variance of d/dmu estimate")
    axes[0].set_title("Part A: E[(z - c)^2]")
    axes[0].legend()
    for name, marker in (("pathwise", "o-"), ("score function", "s-"), ("SF + avg baseline", "^-")):
        pts = [(r[0], r[3]) for r in b if r[1] == name]
        axes[1].loglog([p[0] for p in pts], [p[1] for p in pts], marker, label=name)
    axes[1].set_xlabel("latent dimension D")
    axes[1].set_ylabel("variance of d(-ELBO)/dloc_0")
    axes[1].set_title("Part B: Gaussian ELBO")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "04_gradient_variance.png", dpi=100)
    plt.close(fig)
    print(f"figure: {out / '04_gradient_variance.png'}")
    return {"by_hand": a, "elbo": b}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/tutorials/04_gradient_estimators")
    p.add_argument("--target", type=float, default=3.0, help="c in f(z) = (z - c)^2")
    p.add_argument("--sigmas", type=float, nargs="+", default=[1.0, 0.3, 0.1])
    p.add_argument("--hand-samples", type=int, default=100_000 if not smoke_test else 10_000)
    p.add_argument(
        "--dims", type=int, nargs="+", default=[1, 10, 100] if not smoke_test else [1, 10]
    )
    p.add_argument("--samples", type=int, default=1000 if not smoke_test else 100)
    p.add_argument("--warmup", type=int, default=100 if not smoke_test else 20)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    main(parse_args())
