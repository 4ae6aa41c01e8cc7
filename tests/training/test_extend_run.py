"""Extending a finished run with a longer ``epochs``/``max_steps`` on resume (issue 19 item 6)."""

from __future__ import annotations

import dataclasses

import pyro
import pytest
from _training_run import strip_timing, tiny

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.training import train
from pyro_dvae.utils import load_checkpoint


def _cfg(**kw):  # 1397 digits / batch 300: 5 steps per epoch
    return tiny(max_steps=None, batch_size=300, **kw)


@pytest.mark.slow  # seconds of training: make test-fast skips it
@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": "exponential", "anneal_rate": 0.1, "anneal_every": 2},
        {"estimator": "nvil", "weight_decay": 0.1},
    ],
    ids=["annealed-tau", "nvil-adamw"],
)
def test_extending_a_finished_run_equals_an_uninterrupted_run(tmp_path, kwargs):
    ref = train(_cfg(epochs=2, **kwargs), progress=False)  # uninterrupted, 10 steps
    short = train(_cfg(epochs=1, **kwargs), out_dir=tmp_path, progress=False)
    assert short["steps"] == 5
    pyro.clear_param_store()
    pyro.set_rng_seed(123)  # extending must not depend on the state it starts from
    longer = train(_cfg(epochs=2, **kwargs), resume=tmp_path, progress=False)
    assert strip_timing(longer) == strip_timing(ref)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["config"]["epochs"] == 2


def test_other_settings_must_still_match(tmp_path):
    train(_cfg(epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(DVAEInputError, match=r"different configuration: lr=0\.01"):
        train(_cfg(epochs=2, lr=0.01), resume=tmp_path, progress=False)


def test_cosine_learning_rate_length_cannot_change(tmp_path):
    train(_cfg(epochs=1, lr_schedule="cosine"), out_dir=tmp_path, progress=False)
    with pytest.raises(DVAEInputError) as e:
        train(_cfg(epochs=2, lr_schedule="cosine"), resume=tmp_path, progress=False)
    message = str(e.value)
    assert "\n" not in message
    assert "from 5 to 10 steps" in message and "lr_schedule='cosine'" in message


def test_shorter_than_the_steps_taken_is_refused(tmp_path):
    cfg = _cfg(epochs=2)
    train(cfg, out_dir=tmp_path, progress=False)
    shorter = dataclasses.replace(cfg, max_steps=3)
    with pytest.raises(DVAEInputError, match="is at step 10, past the 3 steps of epochs=2"):
        train(shorter, resume=tmp_path, progress=False)
