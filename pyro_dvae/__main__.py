"""Allow ``python -m pyro_dvae train ...`` (also how ``--nproc`` starts each torchrun rank)."""

from __future__ import annotations

import os
import sys

from .cli.launch import launched_by_torchrun
from .cli.main import main


def exit_rank(code: int) -> None:
    """End a torchrun rank with ``code`` without the interpreter's teardown.

    Every output is written and the process group left by then; what remains is finalization,
    during which gloo's worker threads can abort a finished rank ("terminate called without an
    active exception", SIGABRT), and torchrun then kills the other ranks and reports a failure.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    status = main()
    if launched_by_torchrun():
        exit_rank(status)
    raise SystemExit(status)
