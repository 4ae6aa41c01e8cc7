"""progress_bar draws only on a terminal, and only when enabled; is_terminal survives streams
without isatty or closed ones."""

from __future__ import annotations

import io

import pytest

from pyro_dvae.utils.progress import is_terminal, progress_bar


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_is_terminal():
    assert is_terminal(FakeTerminal())
    assert not is_terminal(io.StringIO())
    assert not is_terminal(object())  # no isatty
    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)  # isatty raises ValueError


@pytest.mark.parametrize(
    "stream, enabled, draws",
    [(FakeTerminal, True, True), (FakeTerminal, False, False), (io.StringIO, True, False)],
)
def test_progress_bar_draws_only_on_an_enabled_terminal(stream, enabled, draws):
    out = stream()
    bar = progress_bar(enabled=enabled, total=4, file=out, desc="epoch 1")
    assert bar.disable is not draws  # (tqdm sets disable on close)
    for _ in range(4):
        bar.update(1)
    bar.close()
    assert ("epoch 1" in out.getvalue()) is draws
    assert out.getvalue() == "" or draws  # nothing at all written when not drawn
