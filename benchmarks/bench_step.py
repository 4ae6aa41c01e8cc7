"""Step time of one SVI step: pyro_dvae vs a hand-written PyTorch loop vs plain Pyro Trace_ELBO.

Same network (encoder 784-512-256, 20x10 one-hot latents, mirrored decoder, Bernoulli pixels),
same estimator (Gumbel-softmax, temperature 1), same batch (100) and Adam, timed in one process,
interleaved round-robin so that machine noise hits all alike. Variants: ``ours`` (the default
``TorchOptimSVI``, whose step is captured once and replayed, see
``pyro_dvae.infer.captured_step``), ``ours-eager`` (``capture="off"``: Pyro's handlers every
step), ``handwritten`` (plain PyTorch, eager), and with ``--compiled``: ``ours-compiled``
(``capture="compiled"``: the captured graph compiled by inductor; its compile time is printed)
and ``handwritten-compiled`` (the hand-written loop under ``torch.compile``: the upper anchor);
``pyro`` (SVI + Trace_ELBO).
Prints median milliseconds per step and the ratios; the last line is exactly
``ours/handwritten = R``.

    python benchmarks/bench_step.py            # full
    python benchmarks/bench_step.py --smoke    # seconds, for the test suite
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.infer import SVI, Trace_ELBO

from pyro_dvae import DiscreteVAE
from pyro_dvae.infer import GumbelSoftmaxELBO, TorchOptimSVI


def make_data(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(dim, generator=g) * 0.4
    return torch.bernoulli(probs.expand(n, dim), generator=g)


class Handwritten:
    """The same estimator written directly in PyTorch (no Pyro)."""

    def __init__(self, vae: DiscreteVAE, lr: float, tau: float, kl: str):
        self.vae, self.tau, self.kl = vae, tau, kl
        self.opt = torch.optim.Adam(vae.parameters(), lr=lr)

    def _log_concrete(self, logits, log_y):
        # log-density of the Concrete distribution at y = exp(log_y), per group
        k = logits.shape[-1]
        tau = self.tau
        score = logits - tau * log_y
        score = (score - score.logsumexp(-1, keepdim=True)).sum(-1)
        return score + math.lgamma(k) + (k - 1) * math.log(tau) - log_y.sum(-1)

    def _bernoulli_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction and KL for ``N`` Bernoulli latents (relaxed Bernoulli samples)."""
        vae, tau = self.vae, self.tau
        logits = vae.encode_logits(x)
        u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        s = (logits + torch.log(u) - torch.log1p(-u)) / tau  # logit of the relaxed sample
        y = torch.sigmoid(s)
        rec = -F.binary_cross_entropy_with_logits(vae.decode(y), x, reduction="none").sum(-1)
        prior = vae.prior_logits.expand_as(logits)
        if self.kl == "relaxed":  # log-densities of the relaxed (BinConcrete) sample, logit space
            kl = (self._log_bin_concrete(logits, s) - self._log_bin_concrete(prior, s)).sum(-1)
        else:
            q, log_q, log_1q = torch.sigmoid(logits), F.logsigmoid(logits), F.logsigmoid(-logits)
            kl = q * (log_q - F.logsigmoid(prior)) + (1 - q) * (log_1q - F.logsigmoid(-prior))
            kl = kl.sum(-1)
        return rec, kl

    def _log_bin_concrete(self, logits, s):
        # density of y = sigmoid(s) under BinConcrete(logits, tau), with log y and log(1 - y)
        # taken from the logit s
        tau = self.tau
        log_y, log_1y = -F.softplus(-s), -F.softplus(s)
        norm = torch.logaddexp(logits - tau * log_y, -tau * log_1y)
        return math.log(tau) + logits - (tau + 1) * (log_y + log_1y) - 2 * norm

    def step(self, x: torch.Tensor) -> float:
        vae = self.vae
        if vae.latent.kind != "categorical":
            rec, kl = self._bernoulli_terms(x)
            loss = -(rec - kl).sum()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            return float(loss.detach())
        logits = torch.log_softmax(vae.encode_logits(x), -1)
        u = torch.rand_like(logits).clamp(1e-6, 1 - 1e-6)
        scores = (logits - torch.log(-torch.log(u))) / self.tau
        log_y = scores - scores.logsumexp(-1, keepdim=True)
        y = log_y.exp()
        rec = -F.binary_cross_entropy_with_logits(vae.decode(y), x, reduction="none").sum(-1)
        prior = torch.log_softmax(vae.prior_logits, -1).expand_as(logits)
        if self.kl == "relaxed":
            kl = (self._log_concrete(logits, log_y) - self._log_concrete(prior, log_y)).sum(-1)
        else:
            kl = (logits.exp() * (logits - prior)).sum((-1, -2))
        loss = -(rec - kl).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.detach())


def plain_pyro_model_guide(vae: DiscreteVAE, tau: float):
    """A user relaxing by hand with Pyro's own RelaxedOneHotCategorical, trained by Trace_ELBO."""
    t = torch.tensor(tau)

    relaxed = (
        dist.RelaxedOneHotCategorical if vae.latent.kind == "categorical" else dist.RelaxedBernoulli
    )

    def model(x):
        pyro.module("plain", vae)
        with pyro.plate("data", x.shape[0]):
            prior = relaxed(t, logits=vae.prior_logits).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Bernoulli(logits=vae.decode(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("plain", vae)
        with pyro.plate("data", x.shape[0]):
            q = relaxed(t, logits=vae.encode_logits(x)).to_event(1)
            pyro.sample("z", q)

    return model, guide


def capture_ab(svis: dict, x: torch.Tensor, pairs: int) -> str:
    """Loss and gradients alone (no optimizer step), captured (and compiled, if there) vs
    eager, alternating call by call (order reversed every round): the part of a step that
    capture changes."""
    names = [n for n in ("ours", "ours-eager", "ours-compiled") if n in svis]
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(pairs):
        for name in names if i % 2 else names[::-1]:
            t0 = time.perf_counter()
            svis[name].compute_grads(x)
            times[name].append(time.perf_counter() - t0)
            svis[name].apply_grads()
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    line = (
        f"loss+grads, {pairs} alternating rounds: captured {med['ours']:.2f} ms, eager "
        f"{med['ours-eager']:.2f} ms, captured/eager = {med['ours'] / med['ours-eager']:.3f}"
    )
    if "ours-compiled" in med:
        line += (
            f"; compiled {med['ours-compiled']:.2f} ms, compiled/eager = "
            f"{med['ours-compiled'] / med['ours-eager']:.3f}, compiled/captured = "
            f"{med['ours-compiled'] / med['ours']:.3f}"
        )
    return line


def compiled_vs_eager(svi: TorchOptimSVI, x: torch.Tensor) -> str:
    """A compiled replay against an eager step on the same noise: the differences that the
    run-time check's tolerances must allow."""
    params = list(svi.parameters().values())
    state = torch.random.get_rng_state()
    loss = svi.compute_grads(x)
    grads = [p.grad.clone() for p in params]
    svi.zero_grad()
    torch.random.set_rng_state(state)
    eager = svi._captured._eager(x)
    worst = max(
        float((g - p.grad).abs().max() / p.grad.abs().max().clamp_min(1e-30))
        for g, p in zip(grads, params)
    )
    svi.zero_grad()
    rel = abs(loss - eager) / abs(eager)
    return (
        f"compiled vs eager, same noise: loss relative difference {rel:.1e}, "
        f"largest gradient difference / largest gradient entry {worst:.1e}"
    )


def time_interleaved(steps: dict, args: argparse.Namespace) -> tuple[dict, dict]:
    """Warm every variant up (compilation included, timed apart), then time ``args.rounds``
    rounds in which each variant runs ``args.steps`` steps in turn: ms/step per round."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    warmup = {}
    for name, fn in steps.items():  # warm-up (and compilation)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            fn()
        warmup[name] = time.perf_counter() - t0
    for _ in range(args.rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            times[name].append((time.perf_counter() - t0) / args.steps * 1e3)
    return times, warmup


def report(times: dict, warmup: dict, args: argparse.Namespace, dim: int, hidden) -> dict:
    """Print the median ms/step of each variant and its ratio to the hand-written loop."""
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"batch {args.batch_size}, data dim {dim}, hidden {hidden}, latent {args.latent}, "
        f"kl={args.kl}, tau={args.temperature}, threads={torch.get_num_threads()}, "
        f"{args.rounds} rounds x {args.steps} steps"
    )
    for k, v in med.items():
        print(f"{k:12s} {v:8.2f} ms/step  (min {min(times[k]):.2f}, max {max(times[k]):.2f})")
    if "pyro" in med:
        print(f"pyro/handwritten = {med['pyro'] / med['handwritten']:.3f}")
    for name in ("ours-eager", "ours-compiled", "handwritten-compiled"):
        if name in med:
            print(f"{name}/handwritten = {med[name] / med['handwritten']:.3f}")
    for name in ("ours-compiled", "handwritten-compiled"):
        if name in warmup:
            print(
                f"{name}: {args.warmup} warm-up steps, compilation included: {warmup[name]:.1f} s"
            )
    return med


def main(args: argparse.Namespace) -> float:
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    torch.manual_seed(0)
    dim, hidden = (64, (32, 16)) if args.smoke else (784, (512, 256))
    x = make_data(args.batch_size, dim)
    nets = {}
    for name in ("ours", "handwritten", "pyro"):
        torch.manual_seed(0)
        nets[name] = DiscreteVAE(dim, args.latent, encoder_hidden=hidden)
    for name in ("ours-eager", "handwritten-compiled", "ours-compiled"):
        torch.manual_seed(0)
        # its own name in Pyro's param store: two models under one name would share tensors
        nets[name] = DiscreteVAE(dim, args.latent, encoder_hidden=hidden, name=name)
    svis = {
        name: TorchOptimSVI(
            nets[name].model,
            nets[name].guide,
            lambda params: torch.optim.Adam(params, lr=1e-3),
            GumbelSoftmaxELBO(temperature=args.temperature, kl=args.kl),
            capture=capture,
        )
        for name, capture in (
            ("ours", "auto"),
            ("ours-eager", "off"),
            ("ours-compiled", "compiled"),
        )
        if args.compiled or capture != "compiled"
    }
    hand = Handwritten(nets["handwritten"], 1e-3, args.temperature, args.kl)
    model, guide = plain_pyro_model_guide(nets["pyro"], args.temperature)
    svi_pyro = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    steps = {
        "ours": lambda: svis["ours"].step(x),
        "ours-eager": lambda: svis["ours-eager"].step(x),
        "handwritten": lambda: hand.step(x),
        "pyro": lambda: svi_pyro.step(x),
    }
    if args.compiled:
        steps["ours-compiled"] = lambda: svis["ours-compiled"].step(x)
        compiled = Handwritten(nets["handwritten-compiled"], 1e-3, args.temperature, args.kl)
        compiled.step = torch.compile(compiled.step)
        steps["handwritten-compiled"] = lambda: compiled.step(x)
    if args.kl != "relaxed":
        del steps["pyro"]  # plain Pyro has no analytic-KL counterpart without hand-written code
    times, warmup = time_interleaved(steps, args)
    med = report(times, warmup, args, dim, hidden)
    if "ours-compiled" in svis:
        print(compiled_vs_eager(svis["ours-compiled"], x))
    if args.capture_pairs:
        print(capture_ab(svis, x, args.capture_pairs))
    ratio = med["ours"] / med["handwritten"]
    print(f"ours/handwritten = {ratio:.3f}")
    return ratio


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a few steps")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--latent", default="20x10")
    p.add_argument("--kl", choices=("relaxed", "analytic"), default="relaxed")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--compiled", action="store_true", help="add the hand-written loop under torch.compile"
    )
    p.add_argument(
        "--capture-pairs",
        type=int,
        default=None,
        metavar="N",
        help="also time loss+grads captured vs eager in N alternating pairs",
    )
    args = p.parse_args(argv)
    args.rounds = args.rounds or (2 if args.smoke else 15)
    args.steps = args.steps or (2 if args.smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 10)
    if args.capture_pairs is None:
        args.capture_pairs = 2 if args.smoke else 60
    return args


if __name__ == "__main__":
    main(parse_args())
