"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest
import torch

from pyro_dvae.cli.main import main

#: a 5-step ``pyro-dvae train`` run, small enough for a module fixture
TRAIN = ["--latent", "2x4", "--encoder-hidden", "16", "--max-steps", "5", "--iwae-samples", "10"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """The output directory of a finished ``pyro-dvae train`` run (trained single-threaded)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *TRAIN, "--no-progress", "--out", str(out)]) == 0
    yield out
    torch.set_num_threads(threads)
