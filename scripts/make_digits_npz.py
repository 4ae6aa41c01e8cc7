"""Regenerate ``pyro_dvae/data/digits.npz`` from scikit-learn's copy of the 8x8 digits.

The data are the UCI "Optical Recognition of Handwritten Digits" test set (1797 images of 8x8
pixels, intensities 0..16) as shipped by scikit-learn (BSD-3-Clause). scikit-learn is needed
only to run this script, never by the package itself.

Example:
    $ python scripts/make_digits_npz.py            # writes pyro_dvae/data/digits.npz
    $ python scripts/make_digits_npz.py --check    # exit 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

__all__ = ["build_arrays", "main"]

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "pyro_dvae" / "data" / "digits.npz"


def build_arrays() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images, labels)``: uint8 ``(1797, 64)`` intensities 0..16 and uint8 labels.

    Example:
        >>> images, labels = build_arrays()  # doctest: +SKIP
        >>> images.shape, int(images.max())  # doctest: +SKIP
        ((1797, 64), 16)
    """
    from sklearn.datasets import load_digits  # local import: optional, script-only dependency

    bunch = load_digits()
    data = np.asarray(bunch.data)
    if data.shape != (1797, 64) or data.min() < 0 or data.max() > 16:
        raise SystemExit(f"unexpected digits data: shape {data.shape}, range {data.min()}..")
    if not np.array_equal(data, np.round(data)):
        raise SystemExit("digits intensities are not integers")
    images = data.astype(np.uint8)
    labels = np.asarray(bunch.target).astype(np.uint8)
    return images, labels


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the npz file; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz path")
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    images, labels = build_arrays()
    if args.check:
        with np.load(args.out) as f:
            same = np.array_equal(f["images"], images) and np.array_equal(f["labels"], labels)
        print(f"{args.out}: {'up to date' if same else 'DIFFERS'}")
        return 0 if same else 1
    np.savez_compressed(args.out, images=images, labels=labels)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
