"""Exact enumeration (``exact_log_likelihood``, ``exact_posterior``, ``StructuredEnumeration``)
against brute-force sums over ``itertools.product`` written here in float64 numpy, and against
Pyro's own ``TraceEnum_ELBO``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from pyro_dvae.errors import DVAEInputError, LatentSpaceTooLargeError
from pyro_dvae.infer import StructuredEnumeration, exact_log_likelihood, exact_posterior
from pyro_dvae.models import DiscreteVAE

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded


F64 = torch.float64
RTOL = 1e-5  # relative tolerance against brute force (float64 throughout)


# ----------------------------------------------------------------- numpy brute force ---------
def np_lse(a, axis=0):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def np_log_softmax(a):
    return a - np_lse(a, -1)[..., None]


def np_normal_lp(x, mu, s):
    return (-0.5 * ((x - mu) / s) ** 2 - np.log(s) - 0.5 * math.log(2 * math.pi)).sum(-1)


def np_bernoulli_lp(x, logit):
    # log sigmoid(l) = -log(1 + e^-l)
    return (x * -np.logaddexp(0, -logit) + (1 - x) * -np.logaddexp(0, logit)).sum(-1)


def one_hot(idx, k):
    return np.eye(k)[list(idx)]


# ----------------------------------------------------------------- model (a) -----------------
N_A, K_A, D_A, B_A = 3, 3, 4, 5
rng = np.random.default_rng(0)
PRIOR_A = rng.normal(size=(N_A, K_A))
W_A = rng.normal(size=(N_A * K_A, D_A))
SIGMA_A = 0.8
X_A = rng.normal(size=(B_A, D_A)) * 1.5


def model_a(x):
    prior = torch.tensor(PRIOR_A)
    w = torch.tensor(W_A)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.OneHotCategorical(logits=prior).to_event(1))
        pyro.sample("x", dist.Normal(z.flatten(-2) @ w, SIGMA_A).to_event(1), obs=x)


def brute_a(x):
    """[K^N, B] log p(x, z) and the list of configurations (each an [N, K] one-hot)."""
    lp_prior = np_log_softmax(PRIOR_A)
    rows, configs = [], []
    for idx in itertools.product(range(K_A), repeat=N_A):
        z = one_hot(idx, K_A)
        lp = sum(lp_prior[g, idx[g]] for g in range(N_A))
        rows.append(lp + np_normal_lp(x, z.reshape(-1) @ W_A, SIGMA_A))
        configs.append(z)
    return np.stack(rows), configs


@config_enumerate
def model_a_per_group(x):
    """Model (a) written the Pyro way: one enumerated site per group."""
    prior = torch.tensor(PRIOR_A)
    w = torch.tensor(W_A).reshape(N_A, K_A, D_A)
    with pyro.plate("data", x.shape[0]):
        mean = 0.0
        for g in range(N_A):
            zg = pyro.sample(f"z{g}", dist.OneHotCategorical(logits=prior[g]))
            mean = mean + zg @ w[g]
        pyro.sample("x", dist.Normal(mean, SIGMA_A).to_event(1), obs=x)


# ----------------------------------------------------------------- model (b) -----------------
N1_B, K_B, D_B, B_B = 3, 3, 2, 4
P1_B = rng.normal(size=N1_B)
A_B = rng.normal(size=(N1_B, K_B)) * 2
C_B = rng.normal(size=K_B)
W1_B, W2_B = rng.normal(size=(N1_B, D_B)), rng.normal(size=(K_B, D_B))
X_B = rng.normal(size=(B_B, D_B))


def model_b(x):
    """Two latent sites: Bernoulli vector z1, then a categorical z2 whose prior depends on z1."""
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Bernoulli(logits=torch.tensor(P1_B)).to_event(1))
        z2 = pyro.sample(
            "z2", dist.OneHotCategorical(logits=torch.tensor(C_B) + z1 @ torch.tensor(A_B))
        )
        mean = z1 @ torch.tensor(W1_B) + z2 @ torch.tensor(W2_B)
        pyro.sample("x", dist.Normal(mean, 0.7).to_event(1), obs=x)


def brute_b_joint(x, z1, z2):
    lp1 = np_bernoulli_lp(z1, P1_B)
    lp2 = (z2 * np_log_softmax(C_B + z1 @ A_B)).sum(-1)
    return lp1 + lp2 + np_normal_lp(x, z1 @ W1_B + z2 @ W2_B, 0.7)


def brute_b(x):
    rows = []
    for bits in itertools.product((0.0, 1.0), repeat=N1_B):
        for k in range(K_B):
            rows.append(brute_b_joint(x, np.array(bits), np.eye(K_B)[k]))
    return np.stack(rows)


# ----------------------------------------------------------------- model (d) -----------------
N_D, K_D, P_D, B_D = 2, 2, 3, 4
PRIOR_D = rng.normal(size=(N_D, K_D))
W_D = rng.normal(size=(N_D * K_D, P_D)) * 2
FLIP_D = 0.2
X_D = (rng.random(size=(B_D, P_D)) < 0.5).astype(float)


def model_d(x):
    """Data plate (dim -2) holding a pixel plate (dim -1, not a data plate), with a latent
    group code z per datum and a per-pixel binary latent w (flips the sign of the pixel logit)."""
    with pyro.plate("data", x.shape[0], dim=-2):
        z = pyro.sample("z", dist.OneHotCategorical(logits=torch.tensor(PRIOR_D)).to_event(1))
        logit = (z.flatten(-2) @ torch.tensor(W_D)).squeeze(-2)  # [..., 1, P] -> [..., P]
        with pyro.plate("pixels", x.shape[1], dim=-1):
            w = pyro.sample("w", dist.Bernoulli(torch.tensor(FLIP_D, dtype=F64)))
            pyro.sample("x", dist.Bernoulli(logits=logit * (1 - 2 * w)), obs=x)


def brute_d(x):
    rows = []
    lp_prior = np_log_softmax(PRIOR_D)
    for idx in itertools.product(range(K_D), repeat=N_D):
        z = one_hot(idx, K_D)
        lpz = sum(lp_prior[g, idx[g]] for g in range(N_D))
        logit = z.reshape(-1) @ W_D
        for w in itertools.product((0.0, 1.0), repeat=P_D):
            w = np.array(w)
            lpw = (w * math.log(FLIP_D) + (1 - w) * math.log(1 - FLIP_D)).sum()
            rows.append(lpz + lpw + np_bernoulli_lp(x, logit * (1 - 2 * w)))
    return np.stack(rows)


# ----------------------------------------------------------------- model (c) -----------------
def make_vae(latent, likelihood, data_dim=5, seed=0):
    torch.manual_seed(seed)
    vae = DiscreteVAE(data_dim, latent, encoder_hidden=(4,), prior="learned", likelihood=likelihood)
    with torch.no_grad():
        for p in vae.parameters():
            p.copy_(0.5 * torch.randn_like(p))
    return vae.double()


def brute_vae(vae, x):
    """[K^N, B] log p(x, z) from the decoder output and prior logits, densities written here."""
    spec = vae.latent
    rows = []
    xs = x.numpy()
    with torch.no_grad():
        prior_logits = vae.prior_logits.numpy()
        for idx in itertools.product(range(spec.categories), repeat=spec.groups):
            if spec.kind == "categorical":
                z = np.eye(spec.categories)[list(idx)]
                lp = (z * np_log_softmax(prior_logits)).sum()
            else:
                z = np.array(idx, dtype=float)
                lp = np_bernoulli_lp(z, prior_logits)
            out = vae.decode(torch.tensor(z)).numpy()
            if vae.likelihood_kind == "bernoulli":
                ll = np_bernoulli_lp(xs, out)
            else:
                ll = np_normal_lp(xs, out, vae.log_scale.exp().numpy())
            rows.append(lp + ll)
    return np.stack(rows)


# ----------------------------------------------------------------- tests ---------------------
CASES = {
    "a_single_site": (model_a, lambda: torch.tensor(X_A), lambda x: brute_a(x.numpy())[0], 27),
    "b_two_sites": (model_b, lambda: torch.tensor(X_B), lambda x: brute_b(x.numpy()), 24),
    # w is local to the pixel plate: summed per pixel, so only z's 2^2 codes are coupled
    "d_nested_plate": (model_d, lambda: torch.tensor(X_D), lambda x: brute_d(x.numpy()), 4),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("chunk_size", [1, 7, None, 10**6])
def test_exact_log_likelihood_user_models(case, chunk_size):
    model, make_x, brute, num_configs = CASES[case]
    x = make_x()
    expected = np_lse(brute(x), axis=0)
    space = StructuredEnumeration(model, args=(x,), guide_side=False)
    assert space.num_coupled_configurations == num_configs
    got = exact_log_likelihood(model, x, chunk_size=chunk_size)
    assert got.shape == (x.shape[0],)
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL)


@pytest.mark.parametrize(
    "latent, likelihood", [("2x3", "bernoulli"), ("2x3", "normal"), ("3b", "bernoulli")]
)
def test_exact_log_likelihood_discrete_vae(latent, likelihood):
    vae = make_vae(latent, likelihood)
    torch.manual_seed(1)
    x = torch.bernoulli(torch.full((6, 5), 0.4, dtype=F64))
    if likelihood == "normal":
        x = x + 0.3 * torch.randn_like(x)
    expected = np_lse(brute_vae(vae, x), axis=0)
    for chunk_size in (1, 7, None):
        got = exact_log_likelihood(vae.model, x, chunk_size=chunk_size)
        np.testing.assert_allclose(got.detach().numpy(), expected, rtol=RTOL)


def test_chunk_size_does_not_change_result_exactly():
    x = torch.tensor(X_B)
    results = [exact_log_likelihood(model_b, x, chunk_size=c) for c in (1, 7, 24)]
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [1, 5, 7, 24])
def test_blocks_cover_every_configuration_once(chunk_size):
    x = torch.tensor(X_B)
    space = StructuredEnumeration(model_b, args=(x,), guide_side=False, chunk_size=chunk_size)
    seen = []
    for block in space.blocks:
        ranges = [range(*block.slices.get(n, (0, space.coupled[n].size))) for n in space.coupled]
        combos = list(itertools.product(*ranges))
        assert len(combos) <= chunk_size
        seen += combos
    assert len(seen) == 24 and len(set(seen)) == 24


def test_exact_posterior_does_not_depend_on_chunk_size():
    x = torch.tensor(X_B)
    values, probs = exact_posterior(model_b, x)
    for chunk_size in (1, 5, 7):
        values_c, probs_c = exact_posterior(model_b, x, chunk_size=chunk_size)
        torch.testing.assert_close(probs_c, probs, rtol=1e-12, atol=1e-12)
        for name in values:
            assert torch.equal(values_c[name], values[name])


def test_latent_space_too_large_error_message():
    x = torch.tensor(X_A)
    with pytest.raises(LatentSpaceTooLargeError) as info:
        exact_log_likelihood(model_a, x, max_configurations=26)
    msg = str(info.value)
    assert "3^3" in msg and "27" in msg and "max_configurations=26" in msg
    assert isinstance(info.value, DVAEInputError)
    # exactly at the limit is fine
    exact_log_likelihood(model_a, x, max_configurations=27)
    with pytest.raises(LatentSpaceTooLargeError, match=r"2\^3 x 3\^1"):
        exact_log_likelihood(model_b, torch.tensor(X_B), max_configurations=10)
    vae = DiscreteVAE(4, "10x8", encoder_hidden=(3,))
    with pytest.raises(LatentSpaceTooLargeError, match=r"8\^10"):
        exact_log_likelihood(vae.model, torch.zeros(2, 4))


def test_non_enumerable_and_subsampled_models_raise():
    def continuous(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    with pytest.raises(DVAEInputError, match="cannot be summed exactly"):
        exact_log_likelihood(continuous, torch.zeros(3))

    def subsampled(x):
        with pyro.plate("data", len(x), subsample_size=2) as idx:
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

    with pytest.raises(DVAEInputError, match="subsampled"):
        exact_log_likelihood(subsampled, torch.zeros(5))


@pytest.mark.parametrize("case", sorted(CASES))
def test_exact_posterior_matches_brute_force(case):
    model, make_x, _, num_configs = CASES[case]
    x = make_x()
    values, probs = exact_posterior(model, x)
    assert probs.shape == (num_configs, x.shape[0])
    torch.testing.assert_close(probs.sum(0), torch.ones(x.shape[0], dtype=F64))
    # brute-force log joint of each returned configuration, independent of enumeration order
    xs = x.numpy()
    log_joint = []
    for c in range(num_configs):
        if case == "a_single_site":
            z = values["z"][c].reshape(N_A, K_A).numpy()
            lp = (z * np_log_softmax(PRIOR_A)).sum() + np_normal_lp(
                xs, z.reshape(-1) @ W_A, SIGMA_A
            )
        elif case == "b_two_sites":
            z1, z2 = values["z1"][c].reshape(-1).numpy(), values["z2"][c].reshape(-1).numpy()
            lp = brute_b_joint(xs, z1, z2)
        else:  # w summed out by brute force: the posterior of z alone
            z = values["z"][c].reshape(N_D, K_D).numpy()
            rows = []
            for w in itertools.product((0.0, 1.0), repeat=P_D):
                w = np.array(w)
                lp = (z * np_log_softmax(PRIOR_D)).sum()
                lp = lp + (w * math.log(FLIP_D) + (1 - w) * math.log(1 - FLIP_D)).sum()
                rows.append(lp + np_bernoulli_lp(xs, (z.reshape(-1) @ W_D) * (1 - 2 * w)))
            lp = np_lse(np.stack(rows), 0)
        log_joint.append(lp)
    log_joint = np.stack(log_joint)
    expected = np.exp(log_joint - np_lse(log_joint, 0))
    np.testing.assert_allclose(probs.numpy(), expected, rtol=RTOL, atol=1e-12)
    # every configuration appears exactly once
    flat = [
        tuple(torch.cat([v[c].reshape(-1) for v in values.values()]).tolist())
        for c in range(num_configs)
    ]
    assert len(set(flat)) == num_configs


def test_agrees_with_pyro_trace_enum_elbo():
    x = torch.tensor(X_A)
    ours = exact_log_likelihood(model_a, x)
    # with an empty guide and every latent enumerated in the model, TraceEnum_ELBO's loss is
    # exactly -sum_n log p(x_n)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro_loss = elbo.loss(model_a_per_group, lambda x: None, x)
    assert float(ours.sum()) == pytest.approx(-pyro_loss, rel=RTOL)
    # and Pyro's enumerated per-group posterior marginals equal the marginals of exact_posterior
    marginals = elbo.compute_marginals(model_a_per_group, lambda x: None, x)
    values, probs = exact_posterior(model_a, x)  # [C, B]
    z = values["z"].reshape(-1, N_A, K_A)  # [C, N, K]
    ours_marg = torch.einsum("cb,cgk->bgk", probs, z)
    for g in range(N_A):
        pyro_marg = marginals[f"z{g}"].log_prob(torch.eye(K_A, dtype=F64).unsqueeze(-2)).exp()
        torch.testing.assert_close(ours_marg[:, g, :], pyro_marg.T, rtol=1e-6, atol=1e-9)


def test_global_latent_outside_data_plate():
    """A latent shared by all data (outside the data plate): no data plate is common to every
    site, so the result is the single joint log p(x_1..x_B) = log sum_c p(c) prod_n p(x_n | c)."""
    locs = torch.tensor([-1.0, 0.5, 2.0], dtype=F64)
    x = torch.tensor([0.3, 1.9, -0.4, 1.0], dtype=F64)

    def global_model(x):
        c = pyro.sample("c", dist.OneHotCategorical(probs=torch.tensor([0.2, 0.5, 0.3], dtype=F64)))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(c @ locs, 1.0), obs=x)

    xs = x.numpy()
    terms = [
        math.log(pc) + (-0.5 * (xs - loc) ** 2 - 0.5 * math.log(2 * math.pi)).sum()
        for pc, loc in zip((0.2, 0.5, 0.3), locs.tolist())
    ]
    expected = np_lse(np.array(terms), axis=0)
    got = exact_log_likelihood(global_model, x)
    assert got.shape == (1,)
    assert float(got) == pytest.approx(float(expected), rel=RTOL)


def test_exact_posterior_needs_a_coupled_site():
    """Only plate-local latents: no joint table to give; the error points to Pyro's tools."""

    def local_only(x):
        with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("pix", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Bernoulli(torch.tensor(0.3, dtype=F64)))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    x = torch.zeros(3, 4, dtype=F64)
    with pytest.raises(DVAEInputError, match="compute_marginals"):
        exact_posterior(local_only, x)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_batch_of_one_datum(case):
    """A data plate of size 1 (packing drops size-1 dims) gives the same numbers as in a batch."""
    model, make_x, brute, _ = CASES[case]
    x = make_x()[:1]
    np.testing.assert_allclose(
        exact_log_likelihood(model, x).numpy(), np_lse(brute(x), axis=0), rtol=RTOL
    )
    _, probs = exact_posterior(model, x)
    _, probs_batch = exact_posterior(model, make_x())
    torch.testing.assert_close(probs[:, 0], probs_batch[:, 0])
