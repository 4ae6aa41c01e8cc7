"""Default torch threads: the idle cores by the load average, 1 to 4; bad values refused."""

from __future__ import annotations

import os

import pytest

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.utils import threads as th


@pytest.mark.parametrize(
    "cores, load, expected",
    [(2, 5.0, 1), (2, 0.1, 2), (2, 0.6, 1), (16, 0.0, 4), (16, 13.2, 3), (1, 0.0, 1)],
)
def test_default_counts_idle_cores(monkeypatch, cores, load, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert th.default_threads() == expected


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(DVAEInputError, match="threads must be an integer >= 1"):
        th.resolve_threads(bad)


def test_train_refuses_zero_threads(capsys):
    from pyro_dvae.cli.main import main

    assert main(["train", "--threads", "0", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "threads" in err
