"""Semi-supervised M2 (Kingma et al. 2014, arXiv:1406.5298): the class y summed out exactly vs
Gumbel-softmax vs straight-through, on MNIST with 100 labels.

Model: p(y) uniform over C classes, p(z) = N(0, I) (50 dims), p(x | y, z) Bernoulli from an MLP
of [onehot(y), z]. Guide: q(y | x) a classifier MLP, q(z | x, y) Normal from an MLP of [x, y].
Labelled batches observe y and add alpha * log q(y | x), Kingma et al.'s classification term, as
a ``pyro.factor`` in the *model* (as Pyro's SS-VAE example does: a factor in the guide counts as
part of log q, so every Pyro ELBO would subtract it and train the classifier away from the
labels); unlabelled batches treat y as a latent, and that is where the estimators differ, on the
same model and guide functions:

- ``enumerate``: :class:`pyro_dvae.infer.EnumeratedELBO`, y summed exactly in the guide and z
  sampled once per class (the same value and gradients as Pyro's ``TraceEnum_ELBO``);
- ``gumbel``: :class:`pyro_dvae.infer.GumbelSoftmaxELBO` (relaxed y, exact discrete KL for y);
- ``st``: the same, straight-through;
- ``labels-only`` (not run by default): the unlabelled batches are skipped, so the classifier
  learns from the labelled term alone: the baseline that the unlabelled data should beat.

Each step takes one unlabelled batch and one batch drawn from the labelled images. The labelled
ELBO is weighted by ``--labelled-weight`` (default: labels / training images), so that, as in
Kingma et al.'s objective, every image counts once per epoch; alpha, the weight of
``log q(y | x)``, is per labelled example per step and not scaled.

Jang et al. 2017 (arXiv:1611.01144, Table 3 and Fig. 5) report test accuracy 92.6% (enumeration),
92.4% (Gumbel), 93.6% (ST) and Gumbel 2x faster than marginalization at 10 classes, 9.9x at 100
classes (GPU). Here: seconds per epoch at 10 and 100 classes (CPU), test accuracy and test -ELBO.

    python benchmarks/m2_semisupervised.py --data-dir ../shared/data/mnist --epochs 1
    python benchmarks/m2_semisupervised.py --smoke
    python benchmarks/m2_semisupervised.py --data-dir ../shared/data/mnist --epochs 100 \\
        --classes 10 --estimators gumbel --log-every 10 --json runs/m2_gumbel.json
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import pyro
import torch
from torch import nn

from pyro_dvae.data import random_translate
from pyro_dvae.infer import EnumeratedELBO, GumbelSoftmaxELBO, TorchOptimSVI
from pyro_dvae.models import SemiSupervisedVAE
from pyro_dvae.training import pick_labelled

ESTIMATORS = ("enumerate", "gumbel", "st")
BASELINES = ("labels-only",)


def make_elbo(name: str, temperature: float):
    if name in ("enumerate", "labels-only"):  # labels-only: y observed, no discrete latent
        return EnumeratedELBO()
    return GumbelSoftmaxELBO(
        temperature=temperature, kl="analytic", straight_through=name == "st", max_plate_nesting=1
    )


def load(args: argparse.Namespace):
    from pyro_dvae.data import load_digits, load_mnist

    data = load_digits() if args.smoke else load_mnist(args.data_dir)
    return data


def grey_train_images(data_dir: str, n: int, split: str = "train") -> torch.Tensor:
    """The first ``n`` training (or ``split="test"``) images as intensities in [0, 1]
    (load_mnist's training split is the first 50k)."""
    from pathlib import Path

    from pyro_dvae.data.mnist import MNIST_FILES, _find, read_idx

    name = MNIST_FILES[f"{split}_images"]
    path = _find(Path(data_dir), name)  # the file load_mnist reads
    if path is None:
        raise SystemExit(f"--dynamic-binarization: no {name} in {data_dir}")
    return torch.from_numpy(read_idx(path)[:n].astype("float32") / 255.0).reshape(n, -1)


def run(
    name: str, classes: int, data, args: argparse.Namespace, grey: torch.Tensor | None = None
) -> dict:
    """One estimator; ``grey``: training intensities to binarize afresh per batch, or None."""
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    x_train, x_test = data.train, data.test
    if args.grey_targets:  # classify grey test images too, as the classifier was trained on
        x_test = grey_train_images(args.data_dir, len(x_test), split="test")
    labels_train, labels_test = data.train_labels.long(), data.test_labels.long()
    g = torch.Generator().manual_seed(args.seed)

    def images(index: torch.Tensor) -> torch.Tensor:  # fixed, binarized afresh, or grey levels
        if grey is None:
            return x_train[index]
        return grey[index] if args.grey_targets else torch.bernoulli(grey[index], generator=g)

    labelled = pick_labelled(labels_train, args.labels // 10, args.label_seed)
    y_labelled = nn.functional.one_hot(labels_train[labelled], classes).float()
    m2 = SemiSupervisedVAE(
        x_train.shape[1],
        classes,
        args.z_dim,
        args.hidden,
        classifier_hidden=args.classifier_hidden,
        alpha=args.alpha,
        batch_norm=args.batch_norm,
        classifier_dropout=args.classifier_dropout,
        entropy_weight=args.entropy_weight,
        consistency_weight=args.consistency_weight,
        augment=functools.partial(random_translate, max_shift=args.consistency_shift),
        adversarial_epsilon=args.adversarial_epsilon,
        consistency_threshold=args.consistency_threshold,
    )
    elbo = make_elbo(name, args.temperature)
    betas = (args.beta1, 0.999)
    adam = lambda params: torch.optim.Adam(params, lr=args.lr, betas=betas)  # noqa: E731
    svi = TorchOptimSVI(m2.model, m2.guide, adam, elbo)
    scheduler = None
    n = len(x_train)
    weight = args.labelled_weight or len(labelled) / n * args.labelled_every
    unlabelled = name != "labels-only"
    for i in range(3):  # warm-up, not timed: first calls pay one-time costs (allocator, imports)
        if unlabelled:
            svi.step(x_train[i * 10 : (i + 1) * 10])
        else:
            svi.step(x_train[labelled[:10]], y_labelled[:10], scale=weight)
    if args.lr_decay != 1.0:  # the optimizer exists after the first step
        scheduler = torch.optim.lr_scheduler.ExponentialLR(svi.optimizer, gamma=args.lr_decay)
    epoch_seconds, curve = [], []
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n, generator=g)
        t0 = time.perf_counter()
        for step, i in enumerate(range(0, n, args.batch_size)):
            if unlabelled:
                svi.step(images(perm[i : i + args.batch_size]), scale=args.unlabelled_weight)
            if step % args.labelled_every == 0:
                j = torch.randint(len(labelled), (args.labelled_batch_size,), generator=g)
                x_labelled = random_translate(images(labelled[j]), args.label_shift, generator=g)
                svi.step(x_labelled, y_labelled[j], scale=weight)
        if scheduler is not None:
            scheduler.step()
        epoch_seconds.append(time.perf_counter() - t0)
        if args.log_every and (epoch % args.log_every == 0 or epoch == args.epochs):
            curve.append((epoch, m2.accuracy(x_test, labels_test)))  # not timed
            print(f"{name} {classes} classes: epoch {epoch} test accuracy {curve[-1][1]:.4f}")
    m2.eval()  # batch norm: running statistics
    with torch.no_grad():
        with m2.elbo_only():  # the test -ELBO is the ELBO, whatever the training objective
            loss = EnumeratedELBO().loss(m2.model, m2.guide, data.test[:1000])
        # the generative model's own classification, argmax_y ELBO(x, y), on 2000 test images
        gen = m2.generative_classify(x_test[:2000], num_samples=4)
        generative_accuracy = float((gen == labels_test[:2000]).float().mean())
    m2.train()
    return {
        "estimator": name,
        "classes": classes,
        "labelled_weight": weight,
        "seconds_per_epoch": min(epoch_seconds),
        "test_accuracy": curve[-1][1] if curve else m2.accuracy(x_test, labels_test),
        "test_nelbo": loss / min(1000, len(x_test)),
        "generative_accuracy": generative_accuracy,
        "accuracy_curve": curve,
    }


def main(args: argparse.Namespace) -> list[dict]:
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    data = load(args)
    need_grey = args.dynamic_binarization or args.grey_targets
    grey = grey_train_images(args.data_dir, len(data.train)) if need_grey else None
    rows = [run(e, c, data, args, grey) for c in args.classes for e in args.estimators]
    print(
        f"M2, {args.labels} labels, {args.epochs} epoch(s), batch {args.batch_size}, "
        f"threads {args.threads}, dataset {data.name}, labelled ELBO weight "
        f"{rows[0]['labelled_weight']:.4g}, alpha {args.alpha:g}"
    )
    print(
        "| classes | estimator | s/epoch | speed-up vs enumerate | test accuracy | test -ELBO "
        "| argmax_y ELBO(x, y) accuracy |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        base = next(
            (
                q["seconds_per_epoch"]
                for q in rows
                if q["classes"] == r["classes"] and q["estimator"] == "enumerate"
            ),
            None,
        )
        speedup = (
            "-"
            if base is None or r["estimator"] in BASELINES
            else f"{base / r['seconds_per_epoch']:.2f}x"
        )
        print(
            f"| {r['classes']} | {r['estimator']} | {r['seconds_per_epoch']:.1f} | {speedup} | "
            f"{100 * r['test_accuracy']:.1f}% | {r['test_nelbo']:.1f} | "
            f"{100 * r['generative_accuracy']:.1f}% |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    return rows


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="embedded digits, tiny sizes")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument(
        "--estimators", nargs="+", choices=ESTIMATORS + BASELINES, default=list(ESTIMATORS)
    )
    p.add_argument("--classes", nargs="+", type=int, default=[10, 100])
    p.add_argument("--labels", type=int, default=100, help="labelled examples (10 per class)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--z-dim", type=int, default=50)
    p.add_argument("--hidden", type=int, nargs="+", default=[500], help="decoder/encoder widths")
    p.add_argument(
        "--classifier-hidden", type=int, nargs="+", default=None, help="default: --hidden"
    )
    p.add_argument("--batch-norm", action="store_true", help="BatchNorm1d in the classifier")
    p.add_argument(
        "--classifier-dropout", type=float, default=0.0, help="dropout on the classifier's input"
    )
    p.add_argument(
        "--label-seed",
        type=int,
        default=None,
        help="draw the labelled images at random with this seed (default: the first per class)",
    )
    p.add_argument(
        "--labelled-every", type=int, default=1, help="a labelled batch every N unlabelled ones"
    )
    p.add_argument("--labelled-batch-size", type=int, default=100)
    p.add_argument("--lr-decay", type=float, default=1.0, help="learning rate factor per epoch")
    p.add_argument(
        "--grey-targets",
        action="store_true",
        help="train on the MNIST intensities in [0, 1] as Bernoulli targets (Pyro's example)",
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--entropy-weight",
        type=float,
        default=1.0,
        help="weight of H(q(y | x)) in the unlabelled objective (1: the ELBO; < 1 sharpens q)",
    )
    p.add_argument("--beta1", type=float, default=0.9, help="Adam's beta1 (Pyro's example: 0.95)")
    p.add_argument(
        "--label-shift",
        type=int,
        default=0,
        help="translate each labelled image drawn by a random offset of up to N pixels per axis\n"
        "(data augmentation of the labelled batches only; MNIST 28x28)",
    )
    p.add_argument(
        "--consistency-weight",
        type=float,
        default=0.0,
        help="weight of KL(q(y | x) || q(y | shifted x)) per unlabelled image (0: off)",
    )
    p.add_argument(
        "--consistency-shift",
        type=int,
        default=2,
        help="the consistency term's random translation, up to N pixels per axis",
    )
    p.add_argument(
        "--consistency-threshold",
        type=float,
        default=0.0,
        help="0: the consistency term is a KL; in (0, 1): FixMatch's pseudo-labels of at\n"
        "least this confidence",
    )
    p.add_argument(
        "--adversarial-epsilon",
        type=float,
        default=0.0,
        help="the consistency term's virtual adversarial step (L2, pixel units; 0: none)",
    )
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument(
        "--alpha",
        type=float,
        default=200.0,
        help="weight of log q(y | x) per labelled example (each step sums its batch)",
    )
    p.add_argument(
        "--labelled-weight",
        type=positive_float,
        default=None,
        help="weight of the labelled ELBO per step (alpha not included); default: labels /\n"
        "training images (0.002 for 100 of 50k), Kingma et al.'s objective, which counts\n"
        "every image once per epoch (each step draws a batch of labelled ones)",
    )
    p.add_argument(
        "--unlabelled-weight",
        type=positive_float,
        default=1.0,
        help="weight of the unlabelled ELBO per step (> 0; 1: Kingma et al.; 1e-6: the unlabelled\n"
        "images train practically only the consistency term)",
    )
    p.add_argument(
        "--dynamic-binarization",
        action="store_true",
        help="binarize the training images afresh in every batch (MNIST intensities); the test\n"
        "set keeps load_mnist's fixed binarization",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument(
        "--log-every", type=int, default=0, help="print test accuracy every N epochs (untimed)"
    )
    p.add_argument("--json", default=None, help="also write the rows (and curves) to this file")
    args = p.parse_args(argv)
    if args.smoke and (args.dynamic_binarization or args.grey_targets):
        p.error("--dynamic-binarization/--grey-targets need MNIST intensities; drop --smoke")
    if args.smoke and (args.label_shift or args.consistency_weight):
        p.error("--label-shift/--consistency-weight need 28x28 MNIST images; drop --smoke")
    if args.smoke:
        args.hidden, args.z_dim, args.classes = [32], 4, [10]
    return args


if __name__ == "__main__":
    main(parse_args())
