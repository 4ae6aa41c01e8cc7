"""Non-finite losses, parameters and gradients: stop with the cause named, or skip (bounded)."""

from __future__ import annotations

import json
import math

import pyro
import pytest
import torch
from _training_run import tiny

from pyro_dvae.errors import NonFiniteLossError
from pyro_dvae.training import train
from pyro_dvae.utils import load_checkpoint


def _inject(monkeypatch, at_calls, poison):
    """Run ``poison(svi, args)`` right before the training step number ``at_calls`` (1-based)."""
    from pyro_dvae.infer import TorchOptimSVI

    real = TorchOptimSVI.compute_grads
    calls = []

    def compute_grads(self, *args, **kwargs):
        calls.append(1)
        if len(calls) in at_calls:
            args = poison(self, args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TorchOptimSVI, "compute_grads", compute_grads)


def _nan_in_decoder_weight(svi, args):
    """A real NaN in a decoder weight (not a faked loss value)."""
    vae = svi.model.__self__  # the DiscreteVAE whose bound method is the model
    with torch.no_grad():
        vae.decoder[0].weight.view(-1)[0] = float("nan")
    return args


def _nan_in_data(monkeypatch, steps, batch_size=100, seed=0):
    """Put a real NaN into one training row of each of the batches of ``steps`` (1-based), after
    the data passed validation (as a corrupted array or a bug in a data pipeline would)."""
    import pyro_dvae.training.trainer as training  # where the Trainer validates its data

    real = training._validated
    perm = torch.randperm(1397, generator=torch.Generator().manual_seed(seed))  # first epoch

    def load(data, config):
        data = real(data, config)
        for step in steps:
            data.train[perm[(step - 1) * batch_size], 5] = float("nan")
        return data

    monkeypatch.setattr(training, "_validated", load)


def test_nan_parameter_stops_and_keeps_checkpoint(tmp_path, monkeypatch):
    _inject(monkeypatch, {3}, _nan_in_decoder_weight)
    cfg = tiny(epochs=3, max_steps=None, batch_size=700)  # 2 steps per epoch
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, out_dir=tmp_path, progress=False)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("training loss became nan at step 3 (epoch 2): parameter ")
    assert "'discrete_vae.decoder.0.weight' holds 1 NaN and 0 infinite value(s)" in msg
    assert f"the last good checkpoint is kept in {tmp_path / 'checkpoint.pt'}" in msg
    assert "lower lr=" in msg
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert not (tmp_path / "metrics.json").exists()


def test_nan_parameter_on_first_step_is_named(monkeypatch):
    # step 1 runs with Pyro's validation on: the distribution check fails first
    _inject(monkeypatch, {1}, _nan_in_decoder_weight)
    with pytest.raises(NonFiniteLossError, match="at step 1 .*'discrete_vae.decoder.0.weight'"):
        train(tiny(), progress=False)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_nan_in_data_names_the_batch_and_skip_mode_recovers(tmp_path, monkeypatch):
    _nan_in_data(monkeypatch, [2])
    with pytest.raises(
        NonFiniteLossError, match="step 2 .*the 'data batch' holds 1 NaN.*on_nan='skip'"
    ):
        train(tiny(), progress=False)
    pyro.clear_param_store()
    _nan_in_data(monkeypatch, [2, 4])
    m = train(tiny(on_nan="skip"), out_dir=tmp_path, progress=False)
    assert [s["step"] for s in m["skipped_steps"]] == [2, 4]
    assert (
        "training loss became nan: the 'data batch' holds 1 NaN" in m["skipped_steps"][0]["problem"]
    )
    loss = m["history"]["loss"]
    assert m["steps"] == 5 and loss[1] is None and loss[3] is None
    assert all(math.isfinite(v) for i, v in enumerate(loss) if i not in (1, 3))
    assert math.isfinite(m["test_nelbo"])  # the skipped updates never reached the parameters
    json.loads((tmp_path / "metrics.json").read_text())  # still strict JSON


def test_skip_mode_is_bounded(monkeypatch):
    _nan_in_data(monkeypatch, [1, 2, 3])
    with pytest.raises(NonFiniteLossError, match="3 skipped updates, more than max_nan_skips=2"):
        train(tiny(on_nan="skip", max_nan_skips=2), progress=False)


def test_skip_mode_cannot_repair_a_nan_parameter(monkeypatch):
    _inject(monkeypatch, {2}, _nan_in_decoder_weight)
    with pytest.raises(NonFiniteLossError, match="skipping updates cannot repair the parameters"):
        train(tiny(on_nan="skip"), progress=False)


def test_nan_gradient_is_named(tmp_path, monkeypatch):
    from pyro_dvae.infer import TorchOptimSVI

    real = TorchOptimSVI.compute_grads
    calls = []

    def compute_grads(self, *args, **kwargs):  # a finite loss whose gradient holds an inf
        loss = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            name = next(n for n in self.parameters() if n.endswith("encoder.0.bias"))
            self.parameters()[name].grad[1] = float("inf")
        return loss

    monkeypatch.setattr(TorchOptimSVI, "compute_grads", compute_grads)
    with pytest.raises(NonFiniteLossError) as e:
        train(tiny(), out_dir=tmp_path, progress=False)
    msg = str(e.value)
    assert msg.startswith("a gradient became non-finite (loss ")
    assert "at step 2 (epoch 1): the gradient of 'discrete_vae.encoder.0.bias' holds 0 NaN" in msg
    assert torch.isfinite(  # the bad update was not applied
        torch.cat([v.flatten() for v in pyro.get_param_store().values()])
    ).all()
