"""Options and checks shared by ``pyro-dvae train`` and ``pyro-dvae compare``.

Example:
    >>> hidden_sizes("256, 128")
    (256, 128)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import DVAEInputError

__all__ = [
    "DEVICES",
    "add_data_arguments",
    "check_nproc",
    "check_out_dir",
    "hidden_sizes",
]

#: choices of ``--device``
DEVICES = ("cpu", "cuda")


def hidden_sizes(text: str) -> tuple[int, ...]:
    """``"256,128"`` -> ``(256, 128)``, an argparse ``type`` for ``--encoder-hidden``."""
    try:
        sizes = tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid hidden sizes {text!r}; write comma-separated integers, e.g. 256,128"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"hidden sizes must be integers >= 1, got {text!r}")
    return sizes


def add_data_arguments(
    group: Any, defaults: Any, *, dataset_help: str | None, latent_help: str
) -> None:
    """Add ``--dataset``, ``--data-dir``, ``--latent`` and ``--encoder-hidden`` to ``group``,
    with the defaults of ``defaults`` (a :class:`~pyro_dvae.training.TrainConfig`).

    Example:
        >>> from pyro_dvae.training import TrainConfig
        >>> p = argparse.ArgumentParser()
        >>> add_data_arguments(p, TrainConfig(), dataset_help=None, latent_help="latent")
        >>> p.parse_args(["--latent", "2x4"]).latent
        '2x4'
    """
    from ..training import DATASETS

    group.add_argument("--dataset", choices=DATASETS, default=defaults.dataset, help=dataset_help)
    group.add_argument("--data-dir", default=None, help="directory holding the MNIST files")
    group.add_argument("--latent", default=defaults.latent, help=latent_help)
    group.add_argument(
        "--encoder-hidden", type=hidden_sizes, default=defaults.encoder_hidden, metavar="H,H"
    )


def check_out_dir(path: Path, force: bool) -> Path:
    """Refuse an output path that is a file, or a non-empty directory without ``--force``.

    Example:
        >>> check_out_dir(Path("/nonexistent/run"), force=False)
        PosixPath('/nonexistent/run')
    """
    if path.exists() and not path.is_dir():
        raise DVAEInputError(f"--out {path} is a file, not a directory; pass a directory path")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise DVAEInputError(
            f"output directory {path} is not empty; pass --force to overwrite it or choose "
            "another --out"
        )
    return path


def check_nproc(nproc: int) -> None:
    """Refuse ``--nproc`` below 1."""
    if nproc < 1:
        raise DVAEInputError(f"--nproc must be >= 1, got {nproc}; pass e.g. --nproc 2")
