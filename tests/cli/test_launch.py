"""``--nproc N`` re-runs the same command under torchrun, without ``--nproc``."""

from __future__ import annotations

import argparse
import sys

from pyro_dvae.cli import launch


def test_relaunch_drops_nproc_and_keeps_the_rest(monkeypatch):
    calls = []
    monkeypatch.setattr(launch.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    args = argparse.Namespace(argv=["train", "--nproc", "2", "--lr", "0.01", "--nproc=3"])
    assert launch.relaunch_with_torchrun(args, 2, ["--out", "runs/x"]) == 0
    (cmd,) = calls
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    tail = cmd[cmd.index("pyro_dvae") + 1 :]
    assert tail == ["train", "--lr", "0.01", "--out", "runs/x"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == "2"


def test_rank_outside_torchrun_is_zero(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert launch.torchrun_rank() == 0 and not launch.launched_by_torchrun()
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert launch.torchrun_rank() == 3 and launch.launched_by_torchrun()
