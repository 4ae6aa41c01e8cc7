"""Checkpoints and resuming (bitwise), refusals, and output directories."""

from __future__ import annotations

import json

import pyro
import pytest
import torch
from _training_run import TIMING_KEYS, tiny

from pyro_dvae.errors import DVAEInputError, NonFiniteLossError
from pyro_dvae.training import train
from pyro_dvae.utils import load_checkpoint
from pyro_dvae.utils.files import read_history

# ----------------------------------------------------------------------------- resume


class _Stop(Exception):
    pass


def _crash_at(step):
    def callback(s, model, elbo):
        if s == step:
            raise _Stop

    return callback


def _strip(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in TIMING_KEYS}


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": "exponential", "anneal_rate": 0.1, "anneal_every": 2},  # tau changes
        {"estimator": "score-function-baseline"},  # Pyro's decaying averages in the param store
        {"estimator": "nvil"},  # the neural baseline's own weights and Adam state
        {"lr_schedule": "cosine", "weight_decay": 0.1},  # AdamW, a rate that changes per step
        {"dropout": 0.2, "encoder_noise": 0.05},  # random masks and flips from the torch RNG
    ],
    ids=[
        "gumbel-softmax-annealed",
        "score-function-baseline",
        "nvil",
        "cosine-lr-adamw",
        "dropout-noise",
    ],
)
def test_resume_mid_epoch_is_bitwise_identical(tmp_path, kwargs):
    cfg = tiny(epochs=2, max_steps=None, batch_size=300, prior="learned", **kwargs)  # 5 / epoch
    ref = train(cfg, progress=False)  # uninterrupted, no files
    with pytest.raises(_Stop):
        train(
            cfg, out_dir=tmp_path / "run", progress=False, callback=_crash_at(9), checkpoint_every=4
        )
    ck = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert (ck["step"], ck["epoch"], ck["epoch_position"]) == (8, 2, 900)  # mid-epoch
    assert not (tmp_path / "run" / "metrics.json").exists()
    pyro.clear_param_store()
    pyro.set_rng_seed(123)  # resuming must not depend on the state it starts from
    resumed = train(resume=tmp_path / "run", progress=False)
    assert _strip(resumed) == _strip(ref)
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk.pop("history_file") == "history.jsonl"  # the history has a file of its own
    on_disk["history"] = read_history(tmp_path / "run")
    assert _strip(on_disk) == json.loads(json.dumps(_strip(ref)))


def test_resume_from_the_first_checkpoint(tmp_path):
    cfg = tiny(estimator="nvil", max_steps=3)
    ref = train(cfg, progress=False)
    with pytest.raises(_Stop):  # killed during step 1: only the checkpoint written at the start
        train(cfg, out_dir=tmp_path, progress=False, callback=_crash_at(1))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 0
    assert _strip(train(resume=tmp_path, progress=False)) == _strip(ref)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_resume_refuses_other_data(tmp_path):
    from pyro_dvae.data import BinaryDataset

    x = (torch.rand(30, 6) > 0.5).float()
    train(
        tiny(batch_size=10), out_dir=tmp_path, progress=False, dataset=BinaryDataset("a", x, x, x)
    )
    wide = torch.zeros(30, 8)
    with pytest.raises(
        DVAEInputError, match="trained on data with 6 features per datum, these data have 8"
    ):
        train(resume=tmp_path, progress=False, dataset=BinaryDataset("b", wide, wide, wide))
    other = 1.0 - x
    with pytest.raises(DVAEInputError, match="data differ from those the run .* was trained on"):
        train(resume=tmp_path, progress=False, dataset=BinaryDataset("a", other, other, other))


def test_resume_refuses_other_config_and_bad_paths(tmp_path):
    train(tiny(), out_dir=tmp_path, progress=False)
    with pytest.raises(DVAEInputError, match=r"different configuration: lr=0.01 \(run: 0.001\)"):
        train(tiny(lr=0.01), resume=tmp_path, progress=False)
    with pytest.raises(DVAEInputError, match="does not exist"):
        train(resume=tmp_path / "nowhere", progress=False)
    with pytest.raises(DVAEInputError, match="no checkpoint.pt in that directory"):
        train(resume=tmp_path.parent, progress=False)


def test_resume_refuses_a_malformed_checkpoint(tmp_path):
    train(tiny(max_steps=1), out_dir=tmp_path, progress=False)
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    torch.save({**ck, "permutation": "not a tensor", "epoch": None}, tmp_path / "checkpoint.pt")
    with pytest.raises(DVAEInputError, match="cannot be resumed .*TypeError.*this version"):
        train(resume=tmp_path, progress=False)
    torch.save({**ck, "format": "other/9"}, tmp_path / "checkpoint.pt")
    with pytest.raises(DVAEInputError, match="has format 'other/9'"):
        train(resume=tmp_path, progress=False)


def test_resume_into_another_run_dir_needs_force(tmp_path):
    train(tiny(max_steps=1), out_dir=tmp_path / "a", progress=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text("{}")  # another run's results
    with pytest.raises(DVAEInputError, match="b already holds a run"):
        train(resume=tmp_path / "a", out_dir=tmp_path / "b", progress=False)


def test_never_checkpoints_a_nan_parameter(tmp_path):
    def poison(step, model, elbo):  # e.g. a buggy callback writes a NaN into the weights
        if step == 2:
            with torch.no_grad():
                model.decoder[0].weight[0, 0] = float("nan")

    with pytest.raises(NonFiniteLossError) as e:
        train(tiny(), out_dir=tmp_path, progress=False, callback=poison, checkpoint_every=1)
    assert str(e.value).startswith(
        "parameter 'discrete_vae.decoder.0.weight' holds 1 NaN and 0 infinite value(s) at step 2"
    )
    assert "the last good checkpoint is kept in" in str(e.value)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1


def test_resume_refuses_a_malicious_checkpoint(tmp_path):
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model_state": {}, "config": {}, "x": Evil()}, tmp_path / "checkpoint.pt")
    with pytest.raises(DVAEInputError, match="executable objects and was refused"):
        train(resume=tmp_path, progress=False)
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------------------- output dirs


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_existing_run_is_not_overwritten_without_force(tmp_path):
    train(tiny(), out_dir=tmp_path, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(DVAEInputError, match="already holds a run.*resume=.*force=True"):
        train(tiny(seed=1), out_dir=tmp_path, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_force_keeps_old_checkpoint_until_new_run_has_one(tmp_path):
    from pyro_dvae.data import BinaryDataset

    old = train(tiny(), out_dir=tmp_path, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    bad = BinaryDataset("bad", *(torch.full((5, 64), 0.5),) * 3)
    with pytest.raises(DVAEInputError, match="not 0 or 1"):  # fails before its first checkpoint
        train(tiny(seed=1), out_dir=tmp_path, progress=False, dataset=bad, force=True)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert (tmp_path / "metrics.json").exists()
    with pytest.raises(_Stop):  # the new run has its own checkpoint: the old results go with it
        train(tiny(seed=1), out_dir=tmp_path, progress=False, force=True, callback=_crash_at(2))
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["config"]["seed"] == 1 and ck["step"] == 0
    assert (
        not (tmp_path / "metrics.json").exists() and not (tmp_path / "training_curve.png").exists()
    )
    new = train(resume=tmp_path, progress=False)
    assert new["config"]["seed"] == 1 and new["test_nelbo"] != old["test_nelbo"]
