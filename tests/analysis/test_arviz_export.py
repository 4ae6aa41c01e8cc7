"""ArviZ export: groups, dims and coords as documented, values that match the model computed
directly, ArviZ diagnostics, netCDF round trip, user-written models, and bad input."""

from __future__ import annotations

import json
import math
import warnings

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_dvae.analysis import (
    GROUPS,
    SAMPLED_GROUPS,
    export_run,
    load_inference_data,
    load_run,
    save_inference_data,
    to_inference_data,
)
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.models import DiscreteVAE
from pyro_dvae.training import TrainConfig, train

N_OBS, CHAINS, DRAWS = 12, 3, 8


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(latent="2x4", encoder_hidden=(16,), max_steps=15, iwae_samples=10)
    train(cfg, out_dir=out, progress=False)
    return out


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def data(run):
    ds = run.load_data()
    return ds.test[:N_OBS], ds.test_labels[:N_OBS]


@pytest.fixture(scope="module")
def idata(run, data):
    x, y = data
    return to_inference_data(
        run.model, None, x, num_samples=DRAWS, num_chains=CHAINS, labels=y, history=run.history
    )


def _dims(group) -> dict:
    return {name: tuple(var.dims) for name, var in group.data_vars.items()}


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_groups_dims_and_coords(idata, run):
    assert set(idata.groups()) == set(GROUPS)
    sample = ("chain", "draw")
    code = ("observation", "latent_group")
    assert _dims(idata.posterior) == {"z": sample + code}
    assert _dims(idata.prior) == {"z": sample + code}
    assert _dims(idata.posterior_predictive) == {"x": sample + ("observation", "data_dim")}
    assert _dims(idata.prior_predictive) == {"x": sample + ("observation", "data_dim")}
    assert _dims(idata.log_likelihood) == {"x": sample + ("observation", "data_dim")}
    assert _dims(idata.observed_data) == {"x": ("observation", "data_dim")}
    assert _dims(idata.constant_data) == {
        "z_probs": code + ("category",),
        "z_prior_probs": code + ("category",),
        "label": ("observation",),
    }
    assert dict(idata.posterior["z"].sizes) == {
        "chain": CHAINS,
        "draw": DRAWS,
        "observation": N_OBS,
        "latent_group": 2,
    }
    assert dict(idata.posterior_predictive["x"].sizes)["data_dim"] == 64
    for dim, size in [("observation", N_OBS), ("latent_group", 2), ("category", 4)]:
        np.testing.assert_array_equal(idata.constant_data[dim].values, np.arange(size))
    np.testing.assert_array_equal(idata.posterior["chain"].values, np.arange(CHAINS))
    assert idata.attrs["latent_sites"] == "z" and idata.attrs["observed_sites"] == "x"


def test_every_sampled_group_has_the_posterior_chains_and_draws(idata):
    """Issue #19 item 4: prior, prior_predictive and sample_stats had one chain against the
    posterior's four."""
    for group in SAMPLED_GROUPS:
        for name, var in idata[group].data_vars.items():
            assert var.dims[:2] == ("chain", "draw"), (group, name)
            np.testing.assert_array_equal(var["chain"].values, np.arange(CHAINS))
            np.testing.assert_array_equal(var["draw"].values, np.arange(DRAWS))
    for group in ("observed_data", "constant_data", "training"):
        for var in idata[group].data_vars.values():
            assert "chain" not in var.dims and "draw" not in var.dims


def test_metadata_on_every_group(idata):
    """Issue #19 item 4: the docstring promised the metadata on every group; it reached only
    ``idata.attrs``."""
    for group in idata.groups():
        attrs = idata[group].attrs
        assert attrs["latent_sites"] == "z" and attrs["observed_sites"] == "x", group
        assert attrs["num_chains"] == CHAINS and attrs["model"] == "DiscreteVAE", group


def test_training_group_holds_the_training_trace(idata, run):
    hist = run.history
    stats = idata.training
    assert _dims(stats) == {
        "loss": ("step",),
        "temperature": ("step",),
        "valid_nelbo": ("epoch",),
        "valid_step": ("epoch",),
    }
    np.testing.assert_allclose(stats["loss"].values, hist["loss"])
    np.testing.assert_allclose(stats["temperature"].values, hist["tau"])
    np.testing.assert_allclose(stats["valid_nelbo"].values, hist["valid_nelbo"])
    np.testing.assert_array_equal(stats["step"].values, np.arange(1, len(hist["loss"]) + 1))


def test_probs_equal_q_computed_from_the_encoder(idata, run, data):
    x, _ = data
    with torch.no_grad():
        q = torch.softmax(run.model.encode_logits(x), -1).numpy()
    probs = idata.constant_data["z_probs"].values
    assert probs.shape == q.shape
    np.testing.assert_allclose(probs, q, rtol=1e-5, atol=1e-6)
    # the prior probabilities are the model's: uniform 1/K
    np.testing.assert_allclose(idata.constant_data["z_prior_probs"].values, 0.25, rtol=1e-6)


def test_samples_are_integer_codes_and_binary_data(idata, data):
    """Issue #19 item 4: ``z`` was a one-hot 0/1 indicator with a ``category`` dim."""
    z = idata.posterior["z"].values
    assert np.issubdtype(z.dtype, np.integer) and z.min() >= 0 and z.max() < 4
    assert len(np.unique(z)) > 1
    # codes follow q(z|x): the frequency of each code over all draws estimates it
    freq = (z[..., None] == np.arange(4)).mean((0, 1))
    np.testing.assert_allclose(freq, idata.constant_data["z_probs"].values, atol=0.25)
    assert set(np.unique(idata.posterior_predictive["x"].values)) <= {0, 1}
    np.testing.assert_array_equal(idata.observed_data["x"].values, data[0].numpy())
    np.testing.assert_array_equal(idata.constant_data["label"].values, data[1].numpy())


def test_log_likelihood_is_log_p_x_given_each_drawn_z_per_pixel(idata, run, data):
    x, _ = data
    codes = torch.as_tensor(idata.posterior["z"].values, dtype=torch.long)
    z = torch.nn.functional.one_hot(codes, 4).float()
    with torch.no_grad():
        expected = run.model.likelihood(z).log_prob(x).numpy()  # (chain, draw, observation)
        logits = run.model.likelihood(z).logits
        per_pixel = dist.Bernoulli(logits=logits).log_prob(x).numpy()
    ll = idata.log_likelihood["x"].values
    assert ll.shape == idata.posterior_predictive["x"].shape  # ArviZ's pointwise convention
    np.testing.assert_allclose(ll, per_pixel, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ll.sum(-1), expected, rtol=1e-5, atol=1e-4)


def _no_warnings(fn, *args, **kwargs):
    """Run an ArviZ function with every warning turned into an error, except one that ArviZ
    0.23 itself triggers inside every ``plot_posterior`` with matplotlib >= 3.11."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings(
            "ignore", message="Passing a dict or None as alias_mapping", module="arviz"
        )
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def run_4x8(tmp_path_factory):
    out = tmp_path_factory.mktemp("run_4x8")
    cfg = TrainConfig(latent="4x8", encoder_hidden=(16,), max_steps=15, iwae_samples=10)
    train(cfg, out_dir=out, progress=False)
    return load_run(out)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_arviz_functions_run_without_warnings(run_4x8, data):
    """Issue #19 item 4: az.summary warned once per constant z_probs entry (NaN R-hat),
    az.plot_loo_pit(idata, y="x") raised on the per-observation log-likelihood, and
    az.plot_posterior / az.plot_forest drew every one-hot indicator and probability.

    ArviZ's sampling defaults (4 chains of 100 draws) and a 4x8 latent: Pareto k is a property
    of the model, and with 2x4 (16 codes) the importance weights of 400 draws tie, which
    ArviZ reports as large k; fewer draws lower its warning threshold (0.28 at 24 draws)."""
    x, y = data
    idata = to_inference_data(run_4x8.model, None, x, labels=y, history=run_4x8.history)
    small = idata.isel(observation=slice(0, 3))  # 12 codes: under ArviZ's 40-panel limit
    summary = _no_warnings(az.summary, idata)
    assert list(summary.index)[:2] == ["z[0, 0]", "z[0, 1]"] and len(summary) == N_OBS * 4
    assert np.isfinite(summary["r_hat"]).all()
    loo = _no_warnings(az.loo, idata, pointwise=True)
    assert np.isfinite(loo["elpd_loo"]) and loo["loo_i"].shape == (N_OBS, 64)
    assert np.isfinite(_no_warnings(az.waic, idata)["elpd_waic"])
    try:
        for fn, kwargs in [
            (az.plot_loo_pit, {"y": "x"}),
            (az.plot_posterior, {}),
            (az.plot_forest, {}),
            (az.plot_ppc, {"num_pp_samples": 10}),
        ]:
            axes = np.ravel(_no_warnings(fn, small, **kwargs))
            width, height = axes[0].get_figure().get_size_inches() * axes[0].get_figure().dpi
            assert width < 3000 and height < 3000, (fn.__name__, width, height)
    finally:
        plt.close("all")


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_netcdf_round_trip_preserves_values(idata, tmp_path):
    path = save_inference_data(idata, tmp_path / "run.nc")
    back = _no_warnings(load_inference_data, path)  # the training group too
    assert set(back.groups()) == set(idata.groups())
    for group in idata.groups():
        for name, var in idata[group].data_vars.items():
            np.testing.assert_array_equal(back[group][name].values, var.values)
            assert back[group][name].dims == var.dims
    assert back.attrs["latent_sites"] == "z" and back.posterior.attrs["latent_sites"] == "z"
    np.testing.assert_array_equal(back.training["step"].values, idata.training["step"].values)
    with pytest.raises(DVAEInputError, match="already exists; pass --force"):
        save_inference_data(idata, path)
    save_inference_data(idata, path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]  # no temporary file left


def test_seeded_export_is_reproducible_and_keeps_global_rng(run, data):
    x, _ = data
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    a = to_inference_data(run.model, None, x, num_samples=3, num_chains=2, seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = to_inference_data(run.model, None, x, num_samples=3, num_chains=2, seed=7)
    np.testing.assert_array_equal(a.posterior["z"].values, b.posterior["z"].values)
    # chains are different streams
    assert not np.array_equal(a.posterior["z"].values[0], a.posterior["z"].values[1])


N_GROUPS, K, D = 3, 4, 10


def _user_model_guide():
    """A model written by hand: index-valued Categorical codes, data plate 'batch' at dim -2,
    pixels in their own plate instead of ``.to_event``."""
    decoder, encoder = nn.Linear(N_GROUPS * K, D), nn.Linear(D, N_GROUPS * K)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("batch", len(x), dim=-2):
            z = pyro.sample("code", dist.Categorical(logits=torch.zeros(N_GROUPS, K)).to_event(1))
            logits = decoder(nn.functional.one_hot(z, K).float().flatten(-2)).squeeze(-2)
            with pyro.plate("pixels", D, dim=-1):
                pyro.sample("pix", dist.Bernoulli(logits=logits), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        with pyro.plate("batch", len(x), dim=-2):
            logits = encoder(x).view(-1, 1, N_GROUPS, K)
            pyro.sample("code", dist.Categorical(logits=logits).to_event(1))

    return model, guide, encoder, decoder


def test_user_written_model_and_guide():
    model, guide, encoder, decoder = _user_model_guide()
    x = torch.bernoulli(torch.full((7, D), 0.5))
    idata = to_inference_data(model, guide, x, num_samples=6, num_chains=2)
    assert _dims(idata.posterior) == {"code": ("chain", "draw", "observation", "latent_group")}
    assert _dims(idata.constant_data) == {
        "code_probs": ("observation", "latent_group", "category"),
        "code_prior_probs": ("observation", "latent_group", "category"),
    }
    assert _dims(idata.posterior_predictive) == {"pix": ("chain", "draw", "observation", "pixels")}
    assert _dims(idata.observed_data) == {"pix": ("observation", "pixels")}
    assert idata.attrs["data_plate"] == "batch"
    with torch.no_grad():
        q = torch.softmax(encoder(x).view(-1, N_GROUPS, K), -1).numpy()
    np.testing.assert_allclose(idata.constant_data["code_probs"].values, q, atol=1e-6)
    codes = torch.as_tensor(idata.posterior["code"].values, dtype=torch.long)
    with torch.no_grad():
        logits = decoder(nn.functional.one_hot(codes, K).float().flatten(-2))
        expected = dist.Bernoulli(logits=logits).log_prob(x).numpy()
    np.testing.assert_allclose(idata.log_likelihood["pix"].values, expected, rtol=1e-5, atol=1e-5)
    assert az.summary(idata, var_names=["code"], kind="stats").shape[0] == 7 * N_GROUPS
    with pytest.warns(UserWarning):
        assert np.isfinite(az.loo(idata)["elpd_loo"])


def test_bernoulli_latents_and_site_selection():
    vae = DiscreteVAE(6, "5b", encoder_hidden=(8,))
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    idata = to_inference_data(vae.model, vae.guide, x, num_samples=2, num_chains=1)
    assert _dims(idata.posterior)["z"] == ("chain", "draw", "observation", "latent_group")
    with torch.no_grad():
        q = torch.sigmoid(vae.encode_logits(x)).numpy()
    np.testing.assert_allclose(idata.constant_data["z_probs"].values, q, atol=1e-6)
    with pytest.raises(DVAEInputError, match=r"latent site\(s\) \['w'\] not found"):
        to_inference_data(vae, None, x, latent_sites=["w"])


def test_probabilities_that_vary_across_draws_stay_with_the_draws():
    """A hierarchical guide q(a|x) q(b|a): the probabilities of b depend on the sampled a, vary
    across draws and stay in ``posterior`` with ``chain, draw``; those of a are the same at every
    draw and go to ``constant_data``. The autoregressive prior's codes are integer codes too."""
    w = torch.tensor(3.0)

    def model(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Bernoulli(0.5))
            b = pyro.sample("b", dist.Bernoulli(logits=w * a - 1.5))
            pyro.sample("x", dist.Normal(a + b, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            a = pyro.sample("a", dist.Bernoulli(logits=x))
            pyro.sample("b", dist.Bernoulli(logits=w * a - 1.5))

    x = torch.tensor([-1.0, 0.0, 2.0])
    idata = to_inference_data(model, guide, x, num_samples=20, num_chains=2)
    sample = ("chain", "draw", "observation")
    assert _dims(idata.posterior) == {"a": sample, "b": sample, "b_probs": sample}
    assert _dims(idata.prior) == {"a": sample, "b": sample, "b_probs": sample}
    assert _dims(idata.constant_data) == {
        "a_probs": ("observation",),
        "a_prior_probs": ("observation",),
    }
    b_probs = idata.posterior["b_probs"].values
    a = idata.posterior["a"].values
    np.testing.assert_allclose(b_probs, torch.sigmoid(w * torch.as_tensor(a) - 1.5), rtol=1e-6)
    np.testing.assert_allclose(idata.constant_data["a_probs"].values, torch.sigmoid(x), rtol=1e-6)

    torch.manual_seed(0)
    vae = DiscreteVAE(6, "3x3", encoder_hidden=(8,), prior="autoregressive")
    idata = to_inference_data(vae, None, torch.ones(4, 6), num_samples=5, num_chains=2)
    assert _dims(idata.prior)["z"] == ("chain", "draw", "observation", "latent_group")
    assert np.issubdtype(idata.prior["z"].dtype, np.integer)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"data": [[0.0, 1.0]]}, "data must be a torch.Tensor"),
        ({"num_samples": 0}, "num_samples must be an integer >= 1"),
        ({"num_chains": 1.5}, "num_chains must be an integer >= 1"),
        ({"labels": torch.zeros(3)}, "got 3 labels for 4 observations"),
    ],
)
def test_bad_input(kwargs, message):
    vae = DiscreteVAE(6, "2x3", encoder_hidden=(8,))
    args = {"data": torch.zeros(4, 6), **kwargs}
    with pytest.raises(DVAEInputError, match=message):
        to_inference_data(vae, None, **args)


def test_load_run_rebuilds_the_trained_model(run_dir, run):
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["model_state"]
    for name, value in run.model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert str(run.model.latent) == "2x4" and not run.model.training
    assert run.step == 15 and len(run.history["loss"]) == 15
    assert run.metrics["config"] == json.loads((run_dir / "metrics.json").read_text())["config"]


def test_load_run_bad_directories(tmp_path):
    with pytest.raises(DVAEInputError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(DVAEInputError, match="no checkpoint.pt in .*pyro-dvae train --out"):
        load_run(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DVAEInputError, match="checkpoint .*checkpoint.pt"):  # refused, one line
        load_run(tmp_path)


def test_export_run(run_dir):
    idata = export_run(run_dir, num_observations=5, num_samples=2, num_chains=2)
    assert dict(idata.posterior["z"].sizes)["observation"] == 5
    assert idata.constant_data["label"].shape == (5,)
    assert idata.attrs["dataset"] == "digits" and idata.attrs["image_shape"] == "8x8"
    assert math.isclose(
        float(idata.training["loss"].values[0]),
        json.loads((run_dir / "history.jsonl").read_text().splitlines()[0])["loss"],
    )
    with pytest.raises(DVAEInputError, match="unknown split"):
        export_run(run_dir, split="dev")


def test_site_outside_the_data_plate_is_refused():
    def model(x):
        w = pyro.sample("w", dist.Bernoulli(torch.tensor(0.5)))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    def guide(x):
        pyro.sample("w", dist.Bernoulli(torch.tensor(0.3)))

    with pytest.raises(DVAEInputError, match="exactly one data plate"):
        to_inference_data(model, guide, torch.zeros(3), num_samples=1, num_chains=1)
