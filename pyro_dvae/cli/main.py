"""``pyro-dvae`` command line: ``pyro-dvae train --dataset digits --latent 4x8 ...``.

Bad input prints one line ``pyro-dvae: error: <problem; fix>`` to stderr (library errors name
options as ``lr=1e-3``; here they are rewritten as flags, ``--lr 1e-3``) and exits with status
2; a loss that becomes NaN/inf exits with status 1. No tracebacks for either.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..errors import DVAEInputError, NonFiniteLossError
from ._options import in_flag_terms

__all__ = ["build_parser", "main"]

PROG = "pyro-dvae"


class _UsageError(Exception):
    """An argparse error, turned into one line by :func:`main`."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{message}; see '{self.prog} --help'")


#: sub-command modules; each has ``register(subparsers)`` and sets ``run(args) -> int``
COMMANDS = ("train", "semisupervised", "compare", "export", "plot")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``pyro-dvae``.

    Example:
        >>> args = build_parser().parse_args(["train", "--latent", "2x4", "--epochs", "1"])
        >>> args.latent, args.epochs, args.estimator
        ('2x4', 1, 'gumbel-softmax')
    """
    parser = _Parser(prog=PROG, description="Discrete-latent VAEs on Pyro.")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    for name in COMMANDS:
        importlib.import_module(f".{name}", __package__).register(sub)
    return parser


def _error(message: str) -> None:
    first = " ".join(str(message).split())  # one line, whatever the message holds
    print(f"{PROG}: error: {first}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyro-dvae`` command line and return its exit status.

    Example:
        >>> main(["train", "--temperature", "-1"])  # doctest: +SKIP
        2
    """
    try:
        args = build_parser().parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # for re-launching (torchrun)
        return int(args.run(args))
    except (DVAEInputError, _UsageError) as e:
        _error(in_flag_terms(str(e)))
        return 2
    except NonFiniteLossError as e:
        _error(in_flag_terms(str(e)))
        return 1
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except SystemExit as e:  # --help / --version
        return e.code if isinstance(e.code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
