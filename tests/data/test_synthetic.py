"""Tests for the synthetic dataset with a known discrete-latent model and exact log p(x)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from pyro_dvae.data import SyntheticModel, make_synthetic
from pyro_dvae.errors import DVAEInputError, LatentSpaceTooLargeError


def brute_force_log_joint(model: SyntheticModel, x: np.ndarray) -> np.ndarray:
    """Independent float64 numpy computation of log p(x, z), configs in itertools.product order."""
    logits = model.prior_logits.numpy()
    w, b = model.weights.numpy(), model.bias.numpy()
    log_prior = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    n_groups, k = logits.shape
    columns = []
    for z in itertools.product(range(k), repeat=n_groups):
        lp = sum(log_prior[g, z[g]] for g in range(n_groups))
        eta = b + sum(w[g, z[g]] for g in range(n_groups))
        log_sig, log_one_minus = -np.logaddexp(0.0, -eta), -np.logaddexp(0.0, eta)
        columns.append(lp + (x * log_sig + (1 - x) * log_one_minus).sum(-1))
    return np.stack(columns, axis=1)


def logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(-1, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(-1, keepdims=True)))[:, 0]


@pytest.fixture(scope="module")
def dataset():
    return make_synthetic()


@pytest.mark.parametrize("groups,categories,data_dim,seed", [(2, 4, 16, 0), (3, 3, 7, 5)])
def test_log_likelihood_matches_brute_force(groups, categories, data_dim, seed):
    model = SyntheticModel.random(groups, categories, data_dim, seed=seed)
    x, _ = model.sample(300, torch.Generator().manual_seed(1))
    ref_joint = brute_force_log_joint(model, x.numpy().astype(np.float64))
    ref = logsumexp(ref_joint)
    got = model.log_likelihood(x)
    assert got.dtype == torch.float64 and got.shape == (300,)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-6)
    # posterior columns follow the same (itertools.product) configuration order
    np.testing.assert_allclose(
        model.posterior(x).numpy(), np.exp(ref_joint - ref[:, None]), rtol=1e-6, atol=1e-12
    )


def test_log_likelihood_normalizes_over_all_binary_vectors():
    model = SyntheticModel.random(2, 3, 10, seed=3)
    all_x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=10)))
    total = torch.logsumexp(model.log_likelihood(all_x), 0)
    assert abs(float(total)) < 1e-10


def test_posterior_rows_sum_to_one(dataset):
    post = dataset.true_model.posterior(dataset.test)
    assert post.shape == (500, 16)
    assert bool((post >= 0).all())
    assert float((post.sum(-1) - 1).abs().max()) < 1e-12


def test_configurations_and_index_consistent():
    model = SyntheticModel.random(3, 3, 4, seed=0)
    confs = model.configurations()
    assert confs.tolist() == [list(z) for z in itertools.product(range(3), repeat=3)]
    assert torch.equal(model.config_index(confs), torch.arange(27))


def test_sampled_latents_match_prior():
    """Each group: Pearson X^2 over K cells with K-1 df; require z = (X^2 - df)/sqrt(2 df) < 4.

    Also every cell's standardized count |c - n p| / sqrt(n p (1 - p)) < 4.5 and the same
    X^2 bound for the K^N joint configuration counts (groups are independent under the prior).
    Seeds are fixed, so this is deterministic; a wrong sampler fails it by a wide margin.
    """
    model = SyntheticModel.random(2, 4, 16, seed=0)
    n = 40_000
    _, z = model.sample(n, torch.Generator().manual_seed(2))
    probs = model.prior_probs().numpy()
    for g in range(model.groups):
        counts = np.bincount(z[:, g].numpy(), minlength=4)
        expected = n * probs[g]
        x2 = ((counts - expected) ** 2 / expected).sum()
        df = 3
        assert (x2 - df) / math.sqrt(2 * df) < 4.0, (g, counts, expected)
        assert (np.abs(counts - expected) / np.sqrt(expected * (1 - probs[g]))).max() < 4.5
    joint = np.bincount(model.config_index(z).numpy(), minlength=16)
    expected = n * np.exp(model.log_prior().numpy())
    x2 = ((joint - expected) ** 2 / expected).sum()
    assert (x2 - 15) / math.sqrt(30) < 4.0


def test_sampled_data_match_model_entropy():
    """Mean -log p(x) of model samples estimates the exact entropy H(X) (computed over 2^10 x)."""
    model = SyntheticModel.random(2, 4, 10, seed=4)
    all_x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=10)))
    log_px = model.log_likelihood(all_x)
    entropy = float(-(log_px.exp() * log_px).sum())
    x, _ = model.sample(20_000, torch.Generator().manual_seed(9))
    nll = -model.log_likelihood(x)
    stderr = float(nll.std()) / math.sqrt(len(nll))
    assert abs(float(nll.mean()) - entropy) < 4 * stderr


def test_sample_x_given_z_uses_decoder():
    model = SyntheticModel.random(1, 2, 5, seed=0)
    x, z = model.sample(20_000, torch.Generator().manual_seed(0))
    for k in range(2):
        rows = x[z[:, 0] == k].double()
        p = torch.sigmoid(model.decoder_logits(torch.tensor([[k]])))[0]
        se = torch.sqrt(p * (1 - p) / len(rows))
        assert bool(((rows.mean(0) - p).abs() < 5 * se + 1e-9).all())


def test_dataset_shapes_labels_and_description(dataset):
    ds = dataset
    assert ds.name == "synthetic" and ds.image_shape is None
    assert (ds.num_train, ds.num_valid, ds.num_test, ds.data_dim) == (2000, 500, 500, 16)
    for split in ("train", "valid", "test"):
        x, y = getattr(ds, split), getattr(ds, f"{split}_labels")
        assert x.dtype == torch.float32 and bool(((x == 0) | (x == 1)).all())
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < 16
    true_ll = ds.true_test_log_likelihood
    assert true_ll == pytest.approx(float(ds.true_model.log_likelihood(ds.test).mean()))
    assert f"{true_ll:.4f} nats/datum" in ds.description
    # the latent is identifiable: the true configuration usually has the largest posterior mass
    post = ds.true_model.posterior(ds.test)
    assert float((post.argmax(-1) == ds.test_labels).double().mean()) > 0.7
    # and the prior is non-uniform but every class is used
    probs = ds.true_model.prior_probs()
    assert float(probs.max()) > 0.35 and float(probs.min()) > 0.005


def test_deterministic_by_seed(dataset):
    again = make_synthetic()
    for field in ("train", "valid", "test", "train_labels", "test_labels"):
        assert torch.equal(getattr(again, field), getattr(dataset, field))
    assert torch.equal(again.true_model.weights, dataset.true_model.weights)
    other = make_synthetic(seed=1)
    assert not torch.equal(other.train, dataset.train)
    assert not torch.equal(other.true_model.weights, dataset.true_model.weights)
    model = SyntheticModel.random(seed=7)
    a = model.sample(50, torch.Generator().manual_seed(3))
    b = model.sample(50, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_custom_sizes():
    ds = make_synthetic(num_train=30, num_valid=10, num_test=20, groups=3, categories=2, data_dim=9)
    assert ds.train.shape == (30, 9) and ds.valid.shape == (10, 9) and ds.test.shape == (20, 9)
    assert ds.true_model.num_configurations == 8
    assert ds.to("cpu").true_model.weights.shape == (3, 2, 9)


def test_bad_arguments():
    with pytest.raises(DVAEInputError, match="num_valid must be >= 1, got 0"):
        make_synthetic(num_valid=0)
    with pytest.raises(DVAEInputError, match="categories >= 2"):
        make_synthetic(categories=1)
    with pytest.raises(LatentSpaceTooLargeError, match="65536"):
        make_synthetic(groups=9, categories=4)
    model = SyntheticModel.random()
    with pytest.raises(DVAEInputError, match="model expects 16 features per datum, x has 8"):
        model.log_likelihood(torch.zeros(3, 8))
    with pytest.raises(DVAEInputError, match="not 0 or 1"):
        model.posterior(torch.full((2, 16), 0.5))
    with pytest.raises(DVAEInputError, match="weights must have shape"):
        SyntheticModel(torch.zeros(2, 4), torch.zeros(2, 3, 5), torch.zeros(5))
