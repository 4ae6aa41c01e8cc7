"""Training runs (Trainer through train()): metrics, outputs, schedules, train/eval modes,
estimators and data checks."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from _training_run import strip_timing as _strip_timing
from _training_run import tiny

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.training import train
from pyro_dvae.utils import load_checkpoint


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
    assert set(m["versions"]) >= {"torch", "pyro", "numpy", "python", "pyro_dvae"}
    assert m["config"]["latent"] == "2x4"
    json.dumps(m)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_same_seed_same_numbers():
    a = train(tiny(), progress=False)
    b = train(tiny(), progress=False)
    assert _strip_timing(a) == _strip_timing(b)
    c = train(tiny(seed=1), progress=False)
    assert c["test_nelbo"] != a["test_nelbo"]


def test_writes_outputs(tmp_path):
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
    # everything a bitwise resume needs
    assert ck["epoch"] == 2 and ck["epoch_position"] == 0 and ck["permutation"] is None
    assert ck["optimizer_state"]["optimizer"]["state"] and ck["optimizer_state"]["param_names"]
    assert set(ck["rng_state"]) >= {"torch", "numpy", "python"}
    assert isinstance(ck["shuffle_rng"], torch.Tensor)
    assert ck["temperature"]["tau"] == 1.0 and ck["history"] == m["history"]
    assert set(ck["param_store"]) == {f"discrete_vae$$${k}" for k, _ in _named_params(ck)}
    assert ck["data"]["data_dim"] == 64 and len(ck["data"]["sha256"]) == 64
    assert ck["versions"]["torch"] == torch.__version__
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def _named_params(ck):
    return [(k, v) for k, v in ck["model_state"].items() if k != "prior_logits"]


def test_exponential_schedule_anneals():
    cfg = tiny(max_steps=6, schedule="exponential", anneal_rate=0.2, anneal_every=2, tau_min=0.7)
    m = train(cfg, progress=False)
    tau = m["history"]["tau"]
    assert tau[0] == 1.0 and tau[1] == 1.0 and tau[2] < 1.0
    assert all(a >= b for a, b in zip(tau, tau[1:]))
    assert min(tau) >= 0.7 and m["final_temperature"] == tau[-1]


def test_cosine_lr_schedule_reaches_zero(monkeypatch):
    import pyro_dvae.training.trainer as loop

    built, seen = {}, []

    def spy(*args, **kwargs):
        built["svi"] = parts = _build(*args, **kwargs)
        return parts

    _build = loop._build
    monkeypatch.setattr(loop, "_build", spy)

    def record(step, model, elbo):
        seen.append(built["svi"][3].optimizer.param_groups[0]["lr"])

    train(tiny(max_steps=4, lr=1e-2, lr_schedule="cosine"), progress=False, callback=record)
    # after step s the optimizer holds the rate of step s: 0.5 * lr * (1 + cos(pi s / 4))
    expected = [0.5e-2 * (1 + math.cos(math.pi * s / 4)) for s in range(1, 5)]
    assert seen == pytest.approx(expected, abs=1e-12) and seen[-1] == 0.0


@pytest.mark.parametrize("categorical", ["stick-breaking", "loo"])
def test_disarm_categorical_reaches_the_elbo(categorical):
    seen = []
    cfg = tiny(max_steps=1, estimator="disarm", disarm_categorical=categorical)
    train(cfg, progress=False, callback=lambda step, model, elbo: seen.append(elbo.categorical))
    assert seen == [categorical]


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_weight_decay_shrinks_the_weights():
    def norm(cfg):
        seen = {}

        def grab(step, model, elbo):
            weights = [p.detach().flatten() for p in model.parameters()]
            seen["norm"] = float(torch.cat(weights).norm())

        train(cfg, progress=False, callback=grab)
        return seen["norm"]

    plain, decayed = norm(tiny(lr=1e-2)), norm(tiny(lr=1e-2, weight_decay=5.0))
    assert decayed < 0.9 * plain


def _without_dropout_or_noise(model):
    """The same weights with dropout and encoder noise removed (still in train mode)."""
    clean = copy.deepcopy(model)
    for seq in (clean.encoder, clean.decoder):
        for i, layer in enumerate(seq):
            if isinstance(layer, torch.nn.Dropout):
                seq[i] = torch.nn.Identity()
    clean.encoder_noise = 0.0
    return clean


def test_training_runs_in_train_mode_and_validates_in_eval_mode(monkeypatch):
    """Dropout and encoder noise act on the training steps only: the validation numbers are
    those of the same weights with both switched off."""
    import pyro_dvae.training.trainer as loop  # where the Trainer validates
    from pyro_dvae.training import evaluation

    modes = {"step": set(), "eval": set()}
    real_eval_elbo = evaluation.evaluate_nelbo

    def spy_eval_elbo(model, x, *, seed, num_samples=1):
        value = real_eval_elbo(model, x, seed=seed, num_samples=num_samples)
        clean = _without_dropout_or_noise(model)
        assert clean.training
        assert value == real_eval_elbo(clean, x, seed=seed, num_samples=num_samples)
        modes["eval"].add(model.training)  # restored after evaluating
        return value

    monkeypatch.setattr(loop, "evaluate_nelbo", spy_eval_elbo)

    def record(step, model, elbo):
        modes["step"].add(model.training)

    cfg = tiny(latent="6b", dropout=0.3, encoder_noise=0.1, epochs=2, max_steps=None)
    train(cfg, progress=False, callback=record)
    assert modes == {"step": {True}, "eval": {True}}


def test_test_metrics_are_those_without_dropout_or_noise():
    from pyro_dvae.data import load_digits
    from pyro_dvae.models import DiscreteVAE
    from pyro_dvae.training.evaluation import evaluate_run

    data = load_digits()
    cfg = tiny(latent="6b", dropout=0.3, encoder_noise=0.1)
    model = DiscreteVAE(data.data_dim, "6b", encoder_hidden=(32,), dropout=0.3, encoder_noise=0.1)
    ours = evaluate_run(model, data, cfg)
    assert model.training  # restored
    assert ours == evaluate_run(_without_dropout_or_noise(model), data, cfg)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("estimator", ["gumbel-softmax", "st-gumbel", "gumbel-rao", "reinmax"])
def test_kl_warmup_raises_the_kl_weight_linearly(estimator):
    seen = []

    def record(step, model, elbo):
        seen.append(elbo.kl_weight)

    cfg = tiny(max_steps=6, kl_warmup=4, estimator=estimator, kl="analytic")
    m = train(cfg, progress=False, callback=record)
    assert seen == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert math.isfinite(m["test_nelbo"])  # evaluation is the plain ELBO (weight 1)
    seen.clear()
    train(tiny(max_steps=2), progress=False, callback=record)
    assert seen == [1.0, 1.0]


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
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


@pytest.mark.parametrize(
    "value,match",
    [
        (0.5, r"1 value\(s\) that are not 0 or 1 \(e.g. 0.5\).*binarize it"),
        (math.nan, "contains 1 NaN and 0 infinite value.*remove or impute"),
        (math.inf, "contains 0 NaN and 1 infinite value.*remove or impute"),
    ],
)
def test_bad_data_rejected(tmp_path, value, match):
    from pyro_dvae.data import BinaryDataset

    x = (torch.rand(10, 6) > 0.5).float()
    bad = x.clone()
    bad[3, 2] = value
    data = BinaryDataset("mine", train=bad, valid=x, test=x)
    with pytest.raises(DVAEInputError, match="mine train data.*" + match) as e:
        train(tiny(), out_dir=tmp_path / "run", progress=False, dataset=data)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # nothing written for bad input


def test_empty_dataset_rejected():
    from pyro_dvae.data import BinaryDataset

    x = torch.zeros(4, 6)
    data = BinaryDataset("mine", train=x[:0], valid=x, test=x)
    with pytest.raises(DVAEInputError, match=r"mine train data is empty \(0 rows\); pass at least"):
        train(tiny(), progress=False, dataset=data)


def test_custom_binary_dataset():
    from pyro_dvae.data import BinaryDataset

    x = (torch.rand(40, 6) > 0.5).float()
    data = BinaryDataset("mine", train=x, valid=x[:10], test=x[:10])
    m = train(tiny(batch_size=10), progress=False, dataset=data)
    assert m["dataset"] == "mine" and m["data_dim"] == 6
