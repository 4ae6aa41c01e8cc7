from __future__ import annotations

import copy
import json
import math
import re

import pyro
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_dvae.errors import DVAEInputError, LatentSpaceTooLargeError, NonFiniteLossError
from pyro_dvae.latent import LatentSpec
from pyro_dvae.training import TrainConfig, train
from pyro_dvae.utils import load_checkpoint

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
        ({"seed": -3}, r"seed must be an integer in \[0, 4294967295\], got -3"),
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
        ({"estimator": "st-gumbel", "kl": "relaxed"}, "zero density.*use kl='analytic'"),
        ({"seed": 2**32}, r"seed must be an integer in \[0, 4294967295\]"),
        ({"on_nan": "ignore"}, "unknown on-nan 'ignore'; choose one of stop, skip"),
        ({"max_nan_skips": 0}, "max nan skips must be an integer >= 1"),
        ({"lr_schedule": "step"}, "unknown lr schedule 'step'; choose one of constant, cosine"),
        ({"weight_decay": -0.1}, "weight decay must be >= 0, got -0.1"),
        ({"weight_decay": math.inf}, "weight decay must be >= 0"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0; pass e.g. dropout=0.1"),
        ({"encoder_noise": -0.5}, r"encoder noise must be in \[0, 1\)"),
        ({"encoder_noise": 0.1, "likelihood": "normal"}, "needs likelihood='bernoulli'"),
        ({"kl_warmup": -5}, r"kl warm-up must be an integer >= 0 \(steps\), got -5"),
        ({"kl_warmup": 10, "estimator": "exact"}, "kl_warmup works with the relaxed estimators"),
        (
            {"prior": "autoregressive", "latent": "8b", "estimator": "gumbel-softmax"},
            "scores hard .* codes; estimator='gumbel-softmax' cannot train it",
        ),
        (
            {"prior": "autoregressive", "latent": "8b", "estimator": "nvil", "kl": "relaxed"},
            "no relaxed .*counterpart; use kl='analytic'",
        ),
        ({"latent": "2000x1000"}, "2000000 units, over the limit of 1048576"),
        (
            {"latent": "10x100", "encoder_hidden": (100_000, 100_000)},
            "parameters .* over the limit",
        ),
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
    msg = str(e.value)
    assert "1048576" in msg and "\n" not in msg
    # what it would cost: 1e20 codes x batch 100 decoder evaluations, their flops, time, memory
    assert "evaluates the decoder 1.0e+22 times" in msg
    assert "at least 5.1e+26 flops" in msg  # 2 * (20*10 units) * 128 hidden per evaluation
    assert "years at 10 GFLOP/s" in msg and "EB held at once" in msg
    assert "estimator='gumbel-softmax'" in msg
    TrainConfig(latent="20x10", estimator="gumbel-softmax").validate()  # fine when relaxed
    TrainConfig(latent="20x10", estimator=estimator, max_configurations=10**20).validate()


def test_validate_huge_latent_is_fast_and_clear():
    # K^N is never built as an integer: this would take forever if it were
    with pytest.raises(LatentSpaceTooLargeError, match=r"500\^2000 = ~.*e\+5397"):
        TrainConfig(latent="2000x500", estimator="exact", encoder_hidden=(2,)).validate()


def test_config_round_trips_through_dict():
    cfg = tiny(encoder_hidden=(8, 4), decoder_hidden=(3,), on_nan="skip")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(DVAEInputError, match="unknown configuration key.*bogus"):
        TrainConfig.from_dict({**cfg.to_dict(), "bogus": 1})


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
    assert set(m["versions"]) >= {"torch", "pyro", "numpy", "python", "pyro_dvae"}
    assert m["config"]["latent"] == "2x4"
    json.dumps(m)


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
    assert "lower --lr" in msg
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert not (tmp_path / "metrics.json").exists()


def test_nan_parameter_on_first_step_is_named(monkeypatch):
    # step 1 runs with Pyro's validation on: the distribution check fails first
    _inject(monkeypatch, {1}, _nan_in_decoder_weight)
    with pytest.raises(NonFiniteLossError, match="at step 1 .*'discrete_vae.decoder.0.weight'"):
        train(tiny(), progress=False)


def test_nan_in_data_names_the_batch_and_skip_mode_recovers(tmp_path, monkeypatch):
    _nan_in_data(monkeypatch, [2])
    with pytest.raises(
        NonFiniteLossError, match="step 2 .*the 'data batch' holds 1 NaN.*on-nan skip"
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
    with pytest.raises(NonFiniteLossError, match="3 skipped updates, more than --max-nan-skips 2"):
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
    assert _strip(on_disk) == json.loads(json.dumps(_strip(ref)))


def test_resume_from_the_first_checkpoint(tmp_path):
    cfg = tiny(estimator="nvil", max_steps=3)
    ref = train(cfg, progress=False)
    with pytest.raises(_Stop):  # killed during step 1: only the checkpoint written at the start
        train(cfg, out_dir=tmp_path, progress=False, callback=_crash_at(1))
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 0
    assert _strip(train(resume=tmp_path, progress=False)) == _strip(ref)


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


def test_existing_run_is_not_overwritten_without_force(tmp_path):
    train(tiny(), out_dir=tmp_path, progress=False)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(DVAEInputError, match="already holds a run.*resume=.*force=True"):
        train(tiny(seed=1), out_dir=tmp_path, progress=False)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


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


# ----------------------------------------------------------------------------- property-based


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(max_size=10),
        st.from_regex(r"\s?-?\d{1,14}\s?[xXbB]\s?-?\d{0,14}\s?", fullmatch=True),
        st.builds(lambda n, k: f"{n}x{k}", st.integers(-3, 10**6), st.integers(-3, 10**6)),
    ),
    st.sampled_from(["gumbel-softmax", "exact", "enumerate"]),
)
def test_latent_specs_parse_or_fail_clearly(text, estimator):
    """Any string: a valid spec that round-trips, or one clear DVAEInputError, never a hang."""
    try:
        spec = LatentSpec.parse(text)
    except DVAEInputError as e:
        msg = str(e)
        assert "\n" not in msg and "e.g." in msg
        assert not re.fullmatch(r"\s*\d+\s*[xX]\s*\d+\s*|\s*\d+\s*[bB]\s*", text) or (
            "at least" in msg
        )
        return
    assert spec.groups >= 1 and spec.categories >= 2
    assert LatentSpec.parse(str(spec)) == spec
    cfg = TrainConfig(latent=text, estimator=estimator, encoder_hidden=(4,))
    try:
        cfg.validate()
    except DVAEInputError as e:  # too many units, parameters or configurations; one line
        assert "\n" not in str(e) and "use a smaller" in str(e)
        big = spec.dim > 2**20 or (
            estimator != "gumbel-softmax" and spec.num_configurations > 2**20
        )
        assert big or spec.dim * 4 * 2 > 2**28
    else:
        assert spec.dim <= 2**20
        assert estimator == "gumbel-softmax" or spec.num_configurations <= 2**20
