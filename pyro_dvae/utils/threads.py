"""How many torch CPU threads a command uses by default.

torch's default (one thread per core) collapses on a shared machine: ``pyro-dvae train`` with its
defaults took 114-225 s with 2 threads against 22-37 s with 1 thread on a 2-core machine whose
1-minute load average was 5 (same metrics to the last digit; 2026-12-06). So the default counts
only the cores that are idle now.
"""

from __future__ import annotations

import os

from ..errors import DVAEInputError

__all__ = ["MAX_DEFAULT_THREADS", "default_threads", "resolve_threads"]

#: the default never exceeds this (the package's networks gain little beyond it on a CPU)
MAX_DEFAULT_THREADS = 4


def default_threads() -> int:
    """The cores available to this process that the 1-minute load average leaves idle, between
    1 and :data:`MAX_DEFAULT_THREADS`.

    Example:
        >>> 1 <= default_threads() <= MAX_DEFAULT_THREADS
        True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)  # rounded: a load of 0.1 leaves the core idle
    except (AttributeError, OSError):
        busy = 0
    return max(1, min(MAX_DEFAULT_THREADS, cores - busy))


def resolve_threads(threads: int | None) -> int:
    """``threads`` checked (>= 1), or :func:`default_threads` for ``None``.

    Example:
        >>> resolve_threads(2)
        2
    """
    if threads is None:
        return default_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise DVAEInputError(f"threads must be an integer >= 1, got {threads!r}; pass e.g. 1")
    return threads
