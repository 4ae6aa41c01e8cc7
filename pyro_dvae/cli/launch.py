"""Re-run a ``pyro-dvae`` command under ``torchrun`` (the ``--nproc N`` option)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

__all__ = ["launched_by_torchrun", "relaunch_with_torchrun", "torchrun_rank"]


def launched_by_torchrun() -> bool:
    """True inside a process started by torchrun (``WORLD_SIZE`` is set).

    Example:
        >>> isinstance(launched_by_torchrun(), bool)
        True
    """
    return "WORLD_SIZE" in os.environ


def torchrun_rank() -> int:
    """This process's rank under torchrun (``RANK``), 0 otherwise: only rank 0 writes output.

    Example:
        >>> torchrun_rank() if not launched_by_torchrun() else 0
        0
    """
    return int(os.environ.get("RANK", "0"))


def relaunch_with_torchrun(args: argparse.Namespace, nproc: int, extra: list[str]) -> int:
    """Run this command again as ``torchrun --standalone --nproc_per_node nproc -m pyro_dvae``.

    The original arguments (``args.argv``, set by :func:`pyro_dvae.cli.main.main`) are reused
    without ``--nproc``, plus ``extra`` (e.g. a resolved ``--out``). Returns torchrun's exit
    status. ``--standalone`` rendezvous on this machine; for several machines run torchrun with
    ``--nnodes``/``--rdzv-endpoint`` yourself (see the user guide).
    """
    argv, skip = [], False
    for token in getattr(args, "argv", None) or sys.argv[1:]:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            argv.append(token)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc_per_node", str(nproc), "-m", "pyro_dvae", *argv, *extra]
    return subprocess.call(cmd)
