from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.utils import load_checkpoint, resolve_device, rng_state, save_checkpoint
from pyro_dvae.utils.checkpoint import set_rng_state


class _Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _state() -> dict[str, torch.Tensor]:
    return torch.nn.Linear(3, 2).state_dict()


def test_roundtrip(tmp_path):
    state = _state()
    opt = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    path = save_checkpoint(
        tmp_path / "ck.pt",
        model_state=state,
        optimizer_state=opt.state_dict(),
        step=7,
        config={"latent": "4x8", "hidden": [256, 128], "data_dir": None},
    )
    data = load_checkpoint(path)
    assert data["step"] == 7
    assert data["config"] == {"latent": "4x8", "hidden": [256, 128], "data_dir": None}
    for k, v in state.items():
        assert torch.equal(data["model_state"][k], v)
    assert set(data["rng_state"]) == {"torch", "numpy", "python"}
    assert not [p for p in tmp_path.iterdir() if p.name != "ck.pt"], "temp file left behind"


def test_rng_state_roundtrip():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_rng_state_survives_checkpoint(tmp_path):
    save_checkpoint(tmp_path / "ck.pt", model_state=_state())
    expected = torch.rand(4)
    set_rng_state(load_checkpoint(tmp_path / "ck.pt")["rng_state"])
    assert torch.equal(torch.rand(4), expected)


def test_malicious_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model_state": _Evil(str(marker))}, f, protocol=2)
    with pytest.raises(DVAEInputError, match="contains executable objects and was refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_malicious_torch_save_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model_state": {}, "payload": _Evil(str(marker))}, path)
    with pytest.raises(DVAEInputError, match="only load checkpoints you trust"):
        load_checkpoint(path)
    assert not marker.exists()


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(DVAEInputError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(DVAEInputError, match="bad.pt"):
        load_checkpoint(bad)
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(DVAEInputError, match="not a pyro-dvae checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_failed_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, model_state={"w": torch.zeros(2)}, step=1)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model_state={"w": torch.ones(2)}, step=2)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"], "temp file left behind"


def test_unserializable_payload_keeps_old_file(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, model_state={"w": torch.zeros(2)}, step=1)
    with pytest.raises(Exception):  # noqa: B017 - lambdas cannot be pickled
        save_checkpoint(path, model_state={"w": torch.ones(2)}, config={"f": lambda: 0})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_creates_parent_directories(tmp_path):
    path = save_checkpoint(tmp_path / "a" / "b" / "ck.pt", model_state={"w": torch.ones(1)})
    assert path.is_file()


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None) == torch.device("cpu")
    with pytest.raises(DVAEInputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(DVAEInputError, match="CUDA is not available; pass --device cpu"):
            resolve_device("cuda")
    else:
        assert resolve_device("cuda").type == "cuda"
