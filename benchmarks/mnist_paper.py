"""Binarized MNIST against the Gumbel-Softmax (Jang et al. 2017) and Concrete (Maddison et al.
2017) papers: test -ELBO and importance-weighted NLL, every estimator on the categorical model.

Data: real MNIST IDX files (``--data-dir``, e.g. ``../shared/data/mnist``), binarized once with
seed 0, 50k/10k/10k. Architecture as in Jang et al.'s reference notebook: encoder 784-512-256,
mirrored decoder, Adam 1e-3, batch 100, tau0 = 1 annealed as max(0.5, exp(-3e-5 t)) every 1000
steps. Paper numbers (test, nats): categorical 20x10 -ELBO: Gumbel-Softmax 101.5, ST 107.8,
score function 110.6; Bernoulli 200 -ELBO: Gumbel-Softmax 105.0, ST 111.5; Maddison et al.
Bernoulli 200 (one nonlinear layer) NLL: Concrete 92.1, NVIL 93.8.

    python benchmarks/mnist_paper.py --data-dir ../shared/data/mnist --configs cat-gumbel
    python benchmarks/mnist_paper.py --smoke      # embedded digits, seconds (for the tests)

``--set KEY=VALUE`` (repeatable) overrides a :class:`~pyro_dvae.training.TrainConfig` field of
every selected configuration (e.g. ``--set kl_warmup=10000 --set prior=learned``); the overrides
are part of the row's name in the table, so every number says how it was obtained.

Checkpoints and metrics go under ``--out`` (default ``runs/mnist_paper``, not in git); the table
is printed and written to ``--out/results.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import fields
from pathlib import Path

import torch

from pyro_dvae.training import TrainConfig, train

ANNEAL = {"schedule": "exponential", "anneal_rate": 3e-5, "anneal_every": 1000, "tau_min": 0.5}

#: name -> (TrainConfig fields, paper metric, paper value)
CONFIGS: dict[str, tuple[dict, str, float | None]] = {
    "cat-gumbel": ({"latent": "20x10", "estimator": "gumbel-softmax", **ANNEAL}, "nelbo", 101.5),
    "cat-st": ({"latent": "20x10", "estimator": "st-gumbel", **ANNEAL}, "nelbo", 107.8),
    "cat-gumbel-rao": ({"latent": "20x10", "estimator": "gumbel-rao", **ANNEAL}, "nelbo", None),
    "cat-reinmax": ({"latent": "20x10", "estimator": "reinmax"}, "nelbo", None),
    "cat-score-function": ({"latent": "20x10", "estimator": "score-function"}, "nelbo", 110.6),
    "cat-nvil": ({"latent": "20x10", "estimator": "nvil"}, "nelbo", None),
    "cat-vimco": ({"latent": "20x10", "estimator": "vimco", "num_particles": 5}, "nelbo", None),
    "bern-gumbel": ({"latent": "200b", "estimator": "gumbel-softmax", **ANNEAL}, "nelbo", 105.0),
    "bern-st": ({"latent": "200b", "estimator": "st-gumbel", **ANNEAL}, "nelbo", 111.5),
    "bern-gumbel-rao": ({"latent": "200b", "estimator": "gumbel-rao", **ANNEAL}, "nelbo", None),
    "bern-reinmax": ({"latent": "200b", "estimator": "reinmax"}, "nelbo", None),
    "cat-rloo": ({"latent": "20x10", "estimator": "rloo", "num_particles": 4}, "nelbo", None),
    "cat-disarm": ({"latent": "20x10", "estimator": "disarm"}, "nelbo", None),
    "bern-rloo": ({"latent": "200b", "estimator": "rloo", "num_particles": 4}, "nelbo", None),
    "cat-gst": ({"latent": "20x10", "estimator": "gst", **ANNEAL}, "nelbo", None),
    "bern-gst": ({"latent": "200b", "estimator": "gst", **ANNEAL}, "nll", 98.4),
    "cat-unordered-set": (
        {"latent": "20x10", "estimator": "unordered-set", "num_particles": 4},
        "nelbo",
        None,
    ),
    "cat-rebar": ({"latent": "20x10", "estimator": "rebar"}, "nelbo", None),
    "cat-relax": ({"latent": "20x10", "estimator": "relax"}, "nelbo", None),
    "bern-unordered-set": (
        {"latent": "200b", "estimator": "unordered-set", "num_particles": 4},
        "nll",
        None,
    ),
    # ARM's Table 2a (arXiv:1807.11143): 200 Bernoulli, nonlinear, test NLL REBAR 101.4
    "bern-rebar": ({"latent": "200b", "estimator": "rebar"}, "nll", 101.4),
    "bern-relax": ({"latent": "200b", "estimator": "relax"}, "nll", None),
    # ARM's Table 2a (arXiv:1807.11143): 200 Bernoulli, nonlinear, test NLL 98.4
    "bern-disarm": ({"latent": "200b", "estimator": "disarm"}, "nll", 98.4),
    "bern-concrete-nll": (
        {
            "latent": "200b",
            "estimator": "gumbel-softmax",
            "kl": "relaxed",
            "temperature": 2 / 3,
            "encoder_hidden": (400,),
        },
        "nll",
        92.1,
    ),
}


def parse_override(text: str) -> tuple[str, object]:
    """``"kl_warmup=10000"`` -> ``("kl_warmup", 10000)``, typed by the TrainConfig field."""
    key, sep, raw = text.partition("=")
    types = {f.name: f.type for f in fields(TrainConfig)}
    if not sep or key not in types:
        raise argparse.ArgumentTypeError(
            f"--set needs KEY=VALUE with KEY a TrainConfig field ({', '.join(sorted(types))}), "
            f"got {text!r}"
        )
    kind = str(types[key])
    try:
        if "tuple" in kind:
            value: object = tuple(int(h) for h in raw.split(","))
        elif kind.startswith("int"):
            value = int(raw)
        elif kind.startswith("float"):
            value = float(raw)
        else:
            value = raw
    except ValueError:
        raise argparse.ArgumentTypeError(f"--set {key}: cannot read {raw!r} as {kind}") from None
    return key, value


def run_config(name: str, args: argparse.Namespace) -> dict:
    fields, metric, paper = CONFIGS[name]
    fields = dict(fields)
    if args.set:
        name = name + "[" + ",".join(f"{k}={v}" for k, v in args.set) + "]"
    if args.smoke:
        fields.update(latent="4x8" if fields["latent"] == "20x10" else "16b")
        dataset, data_dir = "digits", None
    else:
        dataset, data_dir = "mnist", args.data_dir
    values = dict(
        dataset=dataset,
        data_dir=data_dir,
        epochs=args.epochs,
        batch_size=100,
        lr=1e-3,
        seed=args.seed,
        device=args.device,
        iwae_samples=args.iwae_samples,
        encoder_hidden=(32,) if args.smoke else (512, 256),
    )
    values.update(fields)
    values.update(args.set)  # the command line wins
    config = TrainConfig(**values)
    out = Path(args.out) / name.replace("[", "_").replace("]", "").replace(",", "_")
    t0 = time.perf_counter()
    metrics = train(config, out_dir=out, progress=not args.no_progress)
    ours = metrics["test_nelbo"] if metric == "nelbo" else metrics["test_nll_iwae"]
    return {
        "name": name,
        "latent": config.latent,
        "estimator": config.estimator,
        "kl": config.kl,
        "metric": "test -ELBO" if metric == "nelbo" else f"test NLL (IWAE-{args.iwae_samples})",
        "ours": ours,
        "paper": paper,
        "test_nelbo": metrics["test_nelbo"],
        "test_nll_iwae": metrics["test_nll_iwae"],
        "valid_nelbo": metrics.get("valid_nelbo"),
        "test_kl": metrics.get("test_kl"),
        "active_groups": metrics.get("active_groups"),
        "steps": metrics["steps"],
        "minutes": (time.perf_counter() - t0) / 60,
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| config | latent | estimator | metric | ours | paper | test -ELBO | test NLL IWAE |"
        " active groups | steps | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = "-" if r["paper"] is None else f"{r['paper']:.1f}"
        lines.append(
            f"| {r['name']} | {r['latent']} | {r['estimator']} | {r['metric']} | "
            f"{r['ours']:.2f} | {paper} | {r['test_nelbo']:.2f} | {r['test_nll_iwae']:.2f} | "
            f"{r['active_groups']} | {r['steps']} | {r['minutes']:.1f} |"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    rows = [run_config(name, args) for name in args.configs]
    text = table(rows)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="embedded digits, 1 epoch, tiny nets")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=None)
    p.add_argument("--epochs", type=int, default=None, help="default 100 (50k steps)")
    p.add_argument("--iwae-samples", type=int, default=None, help="default 1000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default="runs/mnist_paper")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--set",
        type=parse_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a TrainConfig field, e.g. --set kl_warmup=10000 (repeatable)",
    )
    args = p.parse_args(argv)
    args.configs = args.configs or (["cat-gumbel", "bern-st"] if args.smoke else ["cat-gumbel"])
    args.epochs = args.epochs or (1 if args.smoke else 100)
    args.iwae_samples = args.iwae_samples or (10 if args.smoke else 1000)
    return args


if __name__ == "__main__":
    main(parse_args())
