"""Progress bars that keep logs readable: a tqdm bar on a terminal, nothing else.

tqdm redraws its bar with a carriage return several times a second; written to a file or a pipe
(``pyro-dvae train ... 2> train.log``, a batch job) every redraw stays, 100 KB for a short run.
:func:`progress_bar` draws only where the stream is a terminal; callers print a line per epoch
(or per run) instead where :func:`is_terminal` is false.

Example:
    >>> import io
    >>> bar = progress_bar(enabled=True, total=3, file=io.StringIO())  # not a terminal
    >>> bar.disable
    True
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["is_terminal", "progress_bar"]


def is_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default: ``sys.stderr``) is an interactive terminal.

    Example:
        >>> import io
        >>> is_terminal(io.StringIO())
        False
    """
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def progress_bar(*, enabled: bool, file: Any = None, **kwargs: Any) -> Any:
    """A tqdm bar on ``file`` (default: ``sys.stderr``), drawn when ``enabled`` and ``file`` is a
    terminal; otherwise a disabled bar (its ``update`` and ``close`` do nothing)."""
    stream = sys.stderr if file is None else file
    return tqdm(disable=not (enabled and is_terminal(stream)), file=stream, **kwargs)
