"""TrainConfig: defaults, validation messages (one line, API terms), round trips, latent specs."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from _training_run import tiny
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_dvae.errors import DVAEInputError, LatentSpaceTooLargeError
from pyro_dvae.latent import LatentSpec
from pyro_dvae.training import TrainConfig


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
        ({"disarm_categorical": "tree"}, "unknown disarm categorical 'tree'; choose one of"),
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
