from __future__ import annotations

import json
import math

import pytest
import torch

from pyro_dvae.errors import DVAEInputError, LatentSpaceTooLargeError, NonFiniteLossError
from pyro_dvae.training import TrainConfig, train

TIMING_KEYS = {"seconds", "train_seconds"}


def tiny(**kwargs) -> TrainConfig:
    """A run that takes about a second: 2x4 latent, small MLP, a few steps."""
    defaults = dict(
        latent="2x4",
        encoder_hidden=(32,),
        epochs=1,
        max_steps=5,
        iwae_samples=20,
    )
    defaults.update(kwargs)
    return TrainConfig(**defaults)


def _strip_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}


def test_default_config_is_valid():
    cfg = TrainConfig()
    cfg.validate()
    assert cfg.dataset == "digits" and cfg.latent == "4x8" and cfg.estimator == "gumbel-softmax"
    json.dumps(cfg.to_dict())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"temperature": -1.0}, r"temperature must be > 0, got -1\.0"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"temperature": math.nan}, "temperature must be > 0"),
        ({"tau_min": 0.0}, "tau-min must be > 0"),
        ({"lr": 0.0}, "learning rate must be > 0"),
        ({"lr": -1e-3}, "learning rate must be > 0"),
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"batch_size": 0}, "batch size must be an integer >= 1"),
        ({"iwae_samples": 0}, "iwae samples must be an integer >= 1"),
        ({"anneal_rate": -1.0}, "anneal rate must be >= 0"),
        ({"seed": -3}, "seed must be an integer >= 0"),
        ({"latent": "0x5"}, "at least 1 group"),
        ({"latent": "4x1"}, "at least 2 categories"),
        ({"latent": "abc"}, "cannot parse latent spec 'abc'"),
        ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
        ({"estimator": "reinforce"}, "unknown estimator 'reinforce'"),
        ({"kl": "mc"}, "unknown kl 'mc'"),
        ({"schedule": "linear"}, "unknown schedule 'linear'"),
        ({"prior": "beta"}, "unknown prior"),
        ({"likelihood": "poisson"}, "unknown likelihood"),
        ({"encoder_hidden": (0,)}, "hidden sizes must be >= 1"),
        ({"device": "tpu"}, "unknown device"),
        ({"estimator": "st-gumbel", "kl": "relaxed"}, "zero density.*use --kl analytic"),
    ],
)
def test_validate_rejects(kwargs, match):
    with pytest.raises(DVAEInputError, match=match) as info:
        TrainConfig(**kwargs).validate()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("estimator", ["exact", "enumerate"])
def test_validate_latent_too_large_for_exact(estimator):
    with pytest.raises(LatentSpaceTooLargeError, match=r"10\^20 = 100000000000000000000") as e:
        TrainConfig(latent="20x10", estimator=estimator).validate()
    assert "1048576" in str(e.value)
    TrainConfig(latent="20x10", estimator="gumbel-softmax").validate()  # fine when relaxed
    TrainConfig(latent="20x10", estimator=estimator, max_configurations=10**20).validate()


def test_st_gumbel_with_analytic_kl_is_valid():
    TrainConfig(estimator="st-gumbel", kl="analytic").validate()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_validate_cuda_unavailable():
    with pytest.raises(DVAEInputError, match="CUDA is not available"):
        TrainConfig(device="cuda").validate()


def test_tiny_run_metrics():
    m = train(tiny(), progress=False)
    for key in ("test_nelbo", "test_nll_iwae", "test_nll_exact", "valid_nelbo"):
        assert math.isfinite(m[key]) and m[key] > 0, key
    assert m["steps"] == 5 and len(m["history"]["loss"]) == 5
    assert m["num_configurations"] == 16 and m["latent"] == "2x4"
    assert m["true_test_nll"] is None
    # exact NLL <= IWAE NLL <= -ELBO, up to Monte Carlo noise
    assert m["test_nll_exact"] <= m["test_nll_iwae"] + 0.5
    assert m["test_nll_iwae"] <= m["test_nelbo"] + 0.5
    assert set(m["versions"]) >= {"torch", "pyro", "python"}
    assert m["config"]["latent"] == "2x4"
    json.dumps(m)


def test_same_seed_same_numbers():
    a = train(tiny(), progress=False)
    b = train(tiny(), progress=False)
    assert _strip_timing(a) == _strip_timing(b)
    c = train(tiny(seed=1), progress=False)
    assert c["test_nelbo"] != a["test_nelbo"]


def test_writes_outputs(tmp_path):
    from pyro_dvae.utils import load_checkpoint

    m = train(tiny(epochs=2, max_steps=None, batch_size=700), out_dir=tmp_path, progress=False)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"metrics.json", "checkpoint.pt"} <= names
    assert {"training_curve.png", "reconstructions.png", "prior_samples.png"} <= names
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["test_nelbo"] == m["test_nelbo"]
    assert m["steps"] == 4 and m["epochs_completed"] == 2
    assert m["history"]["valid_step"] == [2, 4]
    ck = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ck["step"] == 4 and ck["config"]["latent"] == "2x4"
    assert ck["model_state"] and ck["optimizer_state"]


def test_exponential_schedule_anneals():
    cfg = tiny(max_steps=6, schedule="exponential", anneal_rate=0.2, anneal_every=2, tau_min=0.7)
    m = train(cfg, progress=False)
    tau = m["history"]["tau"]
    assert tau[0] == 1.0 and tau[1] == 1.0 and tau[2] < 1.0
    assert all(a >= b for a, b in zip(tau, tau[1:]))
    assert min(tau) >= 0.7 and m["final_temperature"] == tau[-1]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"estimator": "exact"},
        {"estimator": "enumerate"},
        {"estimator": "st-gumbel", "kl": "analytic"},
        {"latent": "3b"},
        {"prior": "learned", "kl": "analytic"},
    ],
)
def test_other_estimators_and_latents(kwargs):
    m = train(tiny(max_steps=3, **kwargs), progress=False)
    assert math.isfinite(m["test_nelbo"]) and math.isfinite(m["test_nll_exact"])


def test_synthetic_reports_true_nll():
    m = train(tiny(dataset="synthetic", latent="3x2"), progress=False)
    assert m["true_test_nll"] is not None and math.isfinite(m["true_test_nll"])
    assert m["dataset"] == "synthetic"


def test_exact_nll_skipped_when_too_large():
    m = train(tiny(latent="2x4", max_configurations=8, max_steps=2), progress=False)
    assert m["test_nll_exact"] is None


def test_non_binary_data_rejected():
    from pyro_dvae.data import BinaryDataset

    x = torch.full((10, 6), 0.5)
    data = BinaryDataset("mine", train=x, valid=x, test=x)
    with pytest.raises(DVAEInputError, match="not 0 or 1.*binarize"):
        train(tiny(), progress=False, dataset=data)


def test_custom_binary_dataset():
    from pyro_dvae.data import BinaryDataset

    x = (torch.rand(40, 6) > 0.5).float()
    data = BinaryDataset("mine", train=x, valid=x[:10], test=x[:10])
    m = train(tiny(batch_size=10), progress=False, dataset=data)
    assert m["dataset"] == "mine" and m["data_dim"] == 6


def test_non_finite_loss_raises_and_keeps_checkpoint(tmp_path, monkeypatch):
    import pyro

    from pyro_dvae.infer import TorchOptimSVI
    from pyro_dvae.utils import load_checkpoint

    real_step = TorchOptimSVI.step
    calls = []

    def poisoned_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # a real NaN in a decoder weight, not a faked loss value
            store = dict(pyro.get_param_store().named_parameters())
            name = next(n for n in store if "decoder" in n and n.endswith("weight"))
            with torch.no_grad():
                store[name].view(-1)[0] = float("nan")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(TorchOptimSVI, "step", poisoned_step)
    cfg = tiny(epochs=3, max_steps=None, batch_size=700)  # 2 steps per epoch
    with pytest.raises(NonFiniteLossError, match="at step 3 .*epoch 2.*checkpoint") as e:
        train(cfg, out_dir=tmp_path, progress=False)
    assert "\n" not in str(e.value)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert not (tmp_path / "metrics.json").exists()
