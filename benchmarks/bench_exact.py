"""Exact log p(x) by enumeration as K^N grows: pyro_dvae's chunked enumeration vs Pyro's own.

Model: N one-hot groups of K categories (or N Bernoulli latents), a 784-pixel Bernoulli decoder
(``DiscreteVAE``'s MLP, hidden 256-512), 100 data points. For each latent size the exact
log p(x) is computed

- by ``pyro_dvae.infer.exact_log_likelihood`` (configurations in memory-bounded chunks), and
- by Pyro's parallel enumeration: the same model written with one enumerated site per group,
  ``TraceEnum_ELBO`` with an empty guide (its loss is -log p(x)),

each in a fresh subprocess so that the peak resident memory (RSS) is its own. Reported: seconds,
peak RSS, achieved GFLOP/s (decoder and likelihood matrix products as performed, counted
analytically) against the machine's float32 matrix-multiply rate measured in the case's own
process, interleaved with its calls, and the largest absolute difference between the two
answers. Pyro is not run where its tensors alone would exceed ``--pyro-max-gb``.

Structured rows (plate-local and Markov latents), written in plain Pyro syntax, the same model
function for both sides (latent sites marked ``infer={"enumerate": "parallel"}``):

- ``hmm-T<T>``: an HMM with S = 10 hidden states, T steps (``pyro.markov``), Categorical
  transition rows of a seeded random S x S matrix, Normal emissions, 10 sequences in
  ``pyro.plate("sequences", 10, dim=-1)``; reference: a hand-written forward algorithm in
  float64;
- ``mix-K<K>``: a K-component mixture local to every pixel, 100 data x 784 pixels
  (``pyro.plate("data", 100, dim=-2), pyro.plate("pix", 784, dim=-1)``); reference: the closed
  form sum over pixels of logsumexp_k (log pi_k + log N(x; mu_k, 1)) in float64.

Each side runs in its own subprocess (a warm-up call, then the best of a few), ours and Pyro's
alternating over ``--rounds``; a case that fails is reported as an error string in its row.
Reported: seconds, peak RSS, ours/Pyro time ratio, |sum of ours - (-Pyro's loss)|, and each
side's largest absolute error against the float64 reference.

    python benchmarks/bench_exact.py                 # 8^2..8^5 and 2^8..2^16, then structured
    python benchmarks/bench_exact.py --structured-only --threads 2
    python benchmarks/bench_exact.py --smoke         # seconds, for the test suite
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import subprocess
import sys
import time

import torch

HIDDEN = (256, 512)


def matmul_gflops(
    threads: int, n: int = 2048, repeats: int = 5, operands: tuple | None = None
) -> float:
    """Measured float32 matrix-multiply rate of this machine (best of ``repeats``)."""
    torch.set_num_threads(threads)
    a, b = operands or (torch.randn(n, n), torch.randn(n, n))
    n = a.shape[0]
    a @ b
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def flops_per_configuration(latent_dim: int, data_dim: int, num_data: int) -> float:
    """Multiply-adds x 2 of the decoder MLP and the likelihood's data term, per configuration.

    ``DiscreteVAE`` scores the data as x . logits = h . (x W) + x . b
    (:class:`~pyro_dvae.distributions.LinearBernoulliVector`): ``H x B`` multiply-adds per
    configuration over the last hidden layer h (H = 512), not ``D x B`` over the logits; the
    work counted is the work done.
    """
    widths = (latent_dim,) + HIDDEN + (data_dim,)
    decoder = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    return 2.0 * (decoder + min(HIDDEN[-1], data_dim) * num_data)


def _setup(spec: str, data_dim: int, num_data: int):
    import pyro

    from pyro_dvae import DiscreteVAE

    pyro.set_rng_seed(0)
    vae = DiscreteVAE(data_dim, spec, encoder_hidden=tuple(reversed(HIDDEN)))
    x = torch.bernoulli(torch.full((num_data, data_dim), 0.3))
    return vae, x


def _pyro_model(vae):
    """The same model for Pyro's parallel enumeration: one enumerated site per latent group."""
    import pyro
    import pyro.distributions as dist

    spec = vae.latent

    def model(x):
        with pyro.plate("data", x.shape[0]):
            zs = []
            for i in range(spec.groups):
                if spec.kind == "categorical":
                    p = dist.OneHotCategorical(logits=vae.prior_logits[i])
                else:
                    p = dist.Bernoulli(logits=vae.prior_logits[i])
                z = pyro.sample(f"z{i}", p, infer={"enumerate": "parallel"})
                zs.append(z if spec.kind == "categorical" else z.unsqueeze(-1))
            shape = torch.broadcast_shapes(*(z.shape[:-1] for z in zs))
            code = torch.cat([z.expand(shape + z.shape[-1:]) for z in zs], -1)
            logits = vae.decoder(code)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

    return model


# --- Structured models: plate-local and Markov latents --------------------------------------

HMM_DEFAULTS = {"S": 10, "N": 10, "T": 100}  # states, sequences, steps
MIX_DEFAULTS = {"K": 3, "N": 100, "P": 784}  # components, data, pixels


def parse_structured(spec: str) -> tuple[str, dict]:
    """``"hmm-T100"`` -> ``("hmm", {"S": 10, "N": 10, "T": 100})``; ``"mix-K3-P20"`` likewise."""
    kind, *fields = spec.split("-")
    if kind not in ("hmm", "mix"):
        raise ValueError(f"unknown structured case {spec!r} (hmm-T<T>, mix-K<K>)")
    sizes = dict(HMM_DEFAULTS if kind == "hmm" else MIX_DEFAULTS)
    for field in fields:
        m = re.fullmatch(r"([A-Z])(\d+)", field)
        if not m or m.group(1) not in sizes:
            raise ValueError(f"bad field {field!r} in {spec!r}; allowed: {sorted(sizes)}")
        sizes[m.group(1)] = int(m.group(2))
    return kind, sizes


def is_structured(spec: str) -> bool:
    return spec.split("-")[0] in ("hmm", "mix")


def _hmm_problem(S: int, N: int, T: int):
    """Seeded parameters and data: x has shape [T, N] (time, sequences)."""
    g = torch.Generator().manual_seed(0)
    init = torch.softmax(torch.randn(S, generator=g), -1)
    trans = torch.softmax(2.0 * torch.randn(S, S, generator=g), -1)  # rows: p(z_t | z_{t-1})
    locs = 2.0 * torch.randn(S, generator=g)
    z = torch.multinomial(init, N, replacement=True, generator=g)
    xs = []
    for t in range(T):
        if t:
            z = torch.multinomial(trans[z], 1, generator=g).squeeze(-1)
        xs.append(locs[z] + torch.randn(N, generator=g))
    return (init, trans, locs), torch.stack(xs)


def _hmm_model(params):
    import pyro
    import pyro.distributions as dist

    init, trans, locs = params

    def model(x):  # x: [T, sequences]
        z = None
        with pyro.plate("sequences", x.shape[-1], dim=-1):
            for t in pyro.markov(range(x.shape[0])):
                probs = init if t == 0 else trans[z]
                z = pyro.sample(f"z_{t}", dist.Categorical(probs), infer={"enumerate": "parallel"})
                pyro.sample(f"x_{t}", dist.Normal(locs[z], 1.0), obs=x[t])

    return model


def _hmm_forward(params, x) -> torch.Tensor:
    """log p(x) per sequence by the forward algorithm, in float64: shape [N]."""
    init, trans, locs = (p.double() for p in params)
    x = x.double()
    log_trans = trans.log()
    emit = torch.distributions.Normal(locs, 1.0).log_prob(x.unsqueeze(-1))  # [T, N, S]
    alpha = init.log() + emit[0]  # [N, S]
    for t in range(1, x.shape[0]):
        alpha = torch.logsumexp(alpha.unsqueeze(-1) + log_trans, -2) + emit[t]
    return alpha.logsumexp(-1)


def _mix_problem(K: int, N: int, P: int):
    """Seeded parameters and data: x has shape [N, P] (data, pixels)."""
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(K, generator=g), -1)
    locs = torch.linspace(-3.0, 3.0, K)
    z = torch.multinomial(probs, N * P, replacement=True, generator=g).view(N, P)
    return (probs, locs), locs[z] + torch.randn(N, P, generator=g)


def _mix_model(params):
    import pyro
    import pyro.distributions as dist

    probs, locs = params

    def model(x):  # x: [data, pixels]
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("pix", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Categorical(probs), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(locs[z], 1.0), obs=x)

    return model


def _mix_closed_form(params, x) -> torch.Tensor:
    """log p(x) per datum and pixel in float64: shape [N, P]."""
    probs, locs = (p.double() for p in params)
    comp = torch.distributions.Normal(locs, 1.0).log_prob(x.double().unsqueeze(-1))
    return (probs.log() + comp).logsumexp(-1)


def _max_abs_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest absolute difference per datum (as fine as ``ours``' shape allows)."""
    ours = ours.double()
    while ref.dim() > 0 and ours.shape != ref.shape and ref.numel() > ours.numel():
        ref = ref.sum(-1)
    if ours.shape != ref.shape:  # no common shape: compare the totals
        return abs(float(ours.sum() - ref.sum()))
    return float((ours - ref).abs().max())


def run_structured_case(
    method: str, spec: str, threads: int, repeats: int = 0, min_time: float = 2.0
) -> dict:
    """One structured case in this process: a warm-up call, then the best of ``repeats`` calls
    (5 for ours, 3 for Pyro's) or more, until they take ``min_time`` seconds together (at most
    200). A failure of the computation is returned as ``error``."""
    torch.set_num_threads(threads)
    import pyro
    from pyro.infer import TraceEnum_ELBO

    from pyro_dvae.infer import exact_log_likelihood

    pyro.enable_validation(False)
    kind, sizes = parse_structured(spec)
    if kind == "hmm":
        params, x = _hmm_problem(sizes["S"], sizes["N"], sizes["T"])
        model, ref, nesting = _hmm_model(params), _hmm_forward(params, x), 1
    else:
        params, x = _mix_problem(sizes["K"], sizes["N"], sizes["P"])
        model, ref, nesting = _mix_model(params), _mix_closed_form(params, x), 2
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)

    def compute() -> torch.Tensor:
        if method == "ours":
            return exact_log_likelihood(model, x)
        elbo = TraceEnum_ELBO(max_plate_nesting=nesting)
        return -torch.as_tensor(elbo.loss(model, lambda x: None, x), dtype=torch.float64)

    repeats = repeats or (5 if method == "ours" else 3)
    seconds, calls, spent = math.inf, 0, 0.0
    try:
        with torch.no_grad():
            result = compute()  # warm-up: one-time costs (allocator, threads, tracing)
            # at least `repeats` calls, more while they add up to under `min_time` seconds
            # (fast cases on a shared machine need many calls for a stable best)
            while calls < repeats or (spent < min_time and calls < 200):
                t0 = time.perf_counter()
                result = compute()
                elapsed = time.perf_counter() - t0
                seconds, calls, spent = min(seconds, elapsed), calls + 1, spent + elapsed
    except Exception as e:  # the engine may refuse or fail: report it, do not crash the table
        msg = " ".join(str(e).split())
        return {"error": f"{type(e).__name__}: {msg}"[:160]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = torch.as_tensor(result)
    return {
        "seconds": seconds,
        "calls": calls,
        "peak_gb": peak,
        "base_gb": base_rss,
        "log_px_sum": float(result.double().sum()),
        "shape": list(result.shape),
        "max_abs_err_ref": _max_abs_error(result, ref),
        "ref_sum": float(ref.sum()),
    }


def run_case(
    method: str, spec: str, data_dim: int, num_data: int, threads: int, repeats: int | None = None
) -> dict:
    """One measurement, best of ``repeats`` (called in a fresh subprocess): 7 calls of ours
    (under a second each; fewer left run-to-run spreads of 30%), 2 of Pyro's (seconds each).

    For ours, every call is preceded by a measurement of the matrix-multiply rate in the same
    process (best of 3), and the reported rate is the best of those: the case and its
    reference see the same machine state, which on this VM drifts by 30% within minutes.
    """
    repeats = repeats or (7 if method == "ours" else 2)
    torch.set_num_threads(threads)
    import pyro
    from pyro.infer import TraceEnum_ELBO

    from pyro_dvae.infer import exact_log_likelihood

    pyro.enable_validation(False)
    vae, x = _setup(spec, data_dim, num_data)
    operands = (torch.randn(2048, 2048), torch.randn(2048, 2048))  # the reference matmul's
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)

    def compute() -> float:
        if method == "ours":
            return float(exact_log_likelihood(vae.model, x, max_configurations=2**24).sum())
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        return -float(elbo.loss(_pyro_model(vae), lambda x: None, x))

    seconds, rate = math.inf, 0.0
    with torch.no_grad():
        for _ in range(repeats):  # the first call pays one-time costs (allocator, threads)
            if method == "ours":
                rate = max(rate, matmul_gflops(threads, repeats=3, operands=operands))
            t0 = time.perf_counter()
            total = compute()
            seconds = min(seconds, time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out = {"seconds": seconds, "peak_gb": peak, "base_gb": base_rss, "log_px_sum": total}
    if method == "ours":
        out["matmul_gflops"] = rate
    return out


def _subprocess(method: str, spec: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--case",
        method,
        spec,
        "--data-dim",
        str(args.data_dim),
        "--num-data",
        str(args.num_data),
        "--threads",
        str(args.threads),
        "--min-time",
        str(args.min_time),
    ]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.case_timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {args.case_timeout:.0f} s"}
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit {out.returncode}"]
        return {"error": lines[-1][:120]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _best_of_rounds(results: list[dict]) -> dict:
    """Fastest round's seconds, largest peak RSS; an error only if every round failed."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[0]
    best = dict(min(ok, key=lambda r: r["seconds"]))
    best["peak_gb"] = max(r["peak_gb"] for r in ok)
    best["seconds_per_round"] = [r.get("seconds") for r in results]
    return best


def structured_rows(args: argparse.Namespace) -> list[dict]:
    """The structured cases, ours and Pyro's alternating (ours first in odd rounds, Pyro's
    first in even ones), every case in each round before the next round."""
    print(
        f"\nStructured enumeration (plate-local and Markov latents), threads {args.threads}, "
        f"{args.rounds} round(s); s: best call after a warm-up (at least 5 calls of ours, 3 of "
        f"Pyro's, more until {args.min_time:g} s); GB: peak RSS of the process; "
        "err: largest |log p(x) - float64 reference| per datum (forward algorithm / closed form)"
    )
    header = (
        f"{'case':>12} | {'ours s':>8} {'ours GB':>8} | {'pyro s':>8} {'pyro GB':>8} |"
        f" {'ours/pyro':>9} | {'|sum diff|':>10} | {'ours err':>9} {'pyro err':>9} | note"
    )
    print(header)
    print("-" * len(header))
    runs: dict[str, dict[str, list]] = {s: {"ours": [], "pyro": []} for s in args.structured}
    for r in range(args.rounds):
        for spec in args.structured:
            for method in ("ours", "pyro") if r % 2 == 0 else ("pyro", "ours"):
                runs[spec][method].append(_subprocess(method, spec, args))
    rows = []
    for spec in args.structured:
        ours, theirs = (_best_of_rounds(runs[spec][m]) for m in ("ours", "pyro"))
        row = {"case": spec, "sizes": parse_structured(spec)[1], "ours": ours, "pyro": theirs}
        cols, notes = [], []
        for name, res in (("ours", ours), ("pyro", theirs)):
            if "error" in res:
                cols.append(f"{'-':>8} {'-':>8}")
                notes.append(f"{name} failed: {res['error']}")
            else:
                cols.append(f"{res['seconds']:>8.3f} {res['peak_gb']:>8.2f}")
        ratio = diff = oerr = perr = "-"
        if "error" not in ours:
            oerr = f"{ours['max_abs_err_ref']:.1e}"
        if "error" not in theirs:
            perr = f"{theirs['max_abs_err_ref']:.1e}"
        if "error" not in ours and "error" not in theirs:
            row["ratio"] = ours["seconds"] / theirs["seconds"]
            row["abs_sum_diff"] = abs(ours["log_px_sum"] - theirs["log_px_sum"])
            ratio, diff = f"{row['ratio']:.3f}", f"{row['abs_sum_diff']:.2e}"
        line = f"{spec:>12} | {cols[0]} | {cols[1]} | {ratio:>9} | {diff:>10} | {oerr:>9} {perr:>9}"
        print(f"{line} | {'; '.join(notes)}".rstrip())
        rows.append(row)
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    rows = [] if args.structured_only else vae_rows(args)
    structured = structured_rows(args) if args.structured else []
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"matmul_gflops": args.matmul_gflops, "rows": rows, "structured": structured},
                f,
                indent=2,
            )
    return rows + structured


def vae_rows(args: argparse.Namespace) -> list[dict]:
    from pyro_dvae import LatentSpec

    rate = args.matmul_gflops = matmul_gflops(args.threads)
    print(
        f"data dim {args.data_dim}, {args.num_data} data points, decoder hidden {HIDDEN}, "
        f"threads {args.threads}; measured matmul rate {rate:.1f} GFLOP/s (%mm: against the "
        "rate measured in the case's process, interleaved with its calls)"
    )
    header = (
        f"{'latent':>8} {'K^N':>8} | {'ours s':>8} {'ours GB':>8} {'GFLOP/s':>8} {'%mm':>5} |"
        f" {'pyro s':>8} {'pyro GB':>8} | {'max |diff|':>10}   (GB: peak RSS of the process)"
    )
    print(header)
    print("-" * len(header))
    rows = []
    for spec in args.latents:
        latent = LatentSpec.parse(spec)
        flops = latent.num_configurations * flops_per_configuration(
            latent.dim, args.data_dim, args.num_data
        )
        ours = _subprocess("ours", spec, args)  # with the matmul rate measured alongside
        pyro_gb = 3 * 4 * latent.num_configurations * args.num_data * args.data_dim / 2**30
        if pyro_gb > args.pyro_max_gb:
            theirs = {"error": f"not run: needs > {pyro_gb:.0f} GB"}
        else:
            theirs = _subprocess("pyro", spec, args)
        row = {"latent": spec, "configurations": latent.num_configurations, "ours": ours}
        row["pyro"] = theirs
        if "error" in ours:
            print(f"{spec:>8} {latent.num_configurations:>8} | ours failed: {ours['error']}")
            rows.append(row)
            continue
        gflops = flops / ours["seconds"] / 1e9
        case_rate = ours["matmul_gflops"]  # measured alongside this case
        row.update(gflops=gflops, fraction_of_matmul=gflops / case_rate)
        diff = "-"
        if "error" not in theirs:
            row["max_abs_diff"] = abs(theirs["log_px_sum"] - ours["log_px_sum"]) / args.num_data
            diff = f"{row['max_abs_diff']:.2e}"
            pyro_cols = f"{theirs['seconds']:>8.2f} {theirs['peak_gb']:>8.2f}"
        else:
            pyro_cols = f"{theirs['error']:>17}"
        print(
            f"{spec:>8} {latent.num_configurations:>8} | {ours['seconds']:>8.2f} "
            f"{ours['peak_gb']:>8.2f} {gflops:>8.1f} {100 * gflops / case_rate:>4.0f}% |"
            f" {pyro_cols} | {diff:>10}"
        )
        rows.append(row)
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    p.add_argument("--latents", nargs="+", default=None, help="latent specs, e.g. 8x4 12b")
    p.add_argument("--data-dim", type=int, default=None)
    p.add_argument("--num-data", type=int, default=100)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--pyro-max-gb", type=float, default=12.0, help="skip Pyro above this")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument(
        "--structured",
        nargs="*",
        default=None,
        help="structured cases, e.g. hmm-T100 mix-K3 mix-K5-P20 (none: skip them)",
    )
    p.add_argument("--structured-only", action="store_true", help="only the structured rows")
    p.add_argument("--rounds", type=int, default=1, help="structured: rounds (ours/Pyro alternate)")
    p.add_argument("--min-time", type=float, default=None, help="structured: seconds per case")
    p.add_argument("--case-timeout", type=float, default=1800.0, help="seconds per subprocess")
    p.add_argument("--case", nargs=2, metavar=("METHOD", "LATENT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.data_dim is None:
        args.data_dim = 64 if args.smoke else 784
    if args.latents is None:
        if args.smoke:
            args.latents = ["2x4", "6b"]
        else:
            args.latents = ["2x8", "3x8", "4x8", "5x8"] + [f"{n}b" for n in (8, 10, 12, 14, 16)]
    if args.structured is None:
        if args.smoke:
            args.structured = ["hmm-T10", "mix-K3-P20"]
        else:
            args.structured = ["hmm-T10", "hmm-T100", "hmm-T1000", "mix-K3", "mix-K5", "mix-K10"]
    for spec in args.structured:
        parse_structured(spec)  # fail early on a typo
    if args.min_time is None:
        args.min_time = 0.2 if args.smoke else 2.0
    args.matmul_gflops = None
    return args


if __name__ == "__main__":
    a = parse_args()
    if a.case and is_structured(a.case[1]):
        print(json.dumps(run_structured_case(a.case[0], a.case[1], a.threads, min_time=a.min_time)))
    elif a.case:
        print(json.dumps(run_case(a.case[0], a.case[1], a.data_dim, a.num_data, a.threads)))
    else:
        main(a)
