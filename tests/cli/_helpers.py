"""Checks shared by the command-line tests."""

from __future__ import annotations


def one_line_error(err: str, prefix: str = "pyro-dvae: error: ") -> str:
    """The single line of ``err`` (stderr), which starts with ``prefix``; no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(prefix), err
    assert "Traceback" not in err
    return lines[0]
