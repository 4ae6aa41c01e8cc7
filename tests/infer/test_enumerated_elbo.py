"""EnumeratedELBO: the value and the gradient of sum_z q(z|x) [log p(x,z) - log q(z|x)] against a
brute-force torch expression over ``itertools.product`` (autograd gives the reference gradient)."""

from __future__ import annotations

import itertools

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_dvae.infer import EnumeratedELBO


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add OpenMP synchronization (ms per op on a loaded
    2-core machine for float64 kernels), so run these tests single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


F64 = torch.float64
N, K, D, B = 2, 3, 3, 4
TOL = dict(rtol=1e-6, atol=1e-9)  # float64 throughout; sums of <= 9 terms


def init_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "prior": torch.randn(N, K, generator=g, dtype=F64),
        "w": torch.randn(N * K, D, generator=g, dtype=F64),
        "q": torch.randn(B, N, K, generator=g, dtype=F64),
        "x": 1.5 * torch.randn(B, D, generator=g, dtype=F64),
    }


def model(x):
    prior = pyro.param("prior")
    w = pyro.param("w")
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.OneHotCategorical(logits=prior).to_event(1))
        pyro.sample("x", dist.Normal(z.flatten(-2) @ w, 0.9).to_event(1), obs=x)


def guide(x):
    q = pyro.param("q")
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.OneHotCategorical(logits=q).to_event(1))


def brute_elbo(prior, w, q, x):
    """Per-datum exact ELBO by explicit summation (differentiable, torch, float64)."""
    lp_prior = prior.log_softmax(-1)
    lq = q.log_softmax(-1)  # [B, N, K]
    elbo = torch.zeros(x.shape[0], dtype=F64)
    for idx in itertools.product(range(K), repeat=N):
        z = torch.eye(K, dtype=F64)[list(idx)]
        mean = z.reshape(-1) @ w
        log_lik = (-0.5 * ((x - mean) / 0.9) ** 2 - np.log(0.9) - 0.5 * np.log(2 * np.pi)).sum(-1)
        log_p = sum(lp_prior[g, idx[g]] for g in range(N)) + log_lik
        log_q = sum(lq[:, g, idx[g]] for g in range(N))
        elbo = elbo + log_q.exp() * (log_p - log_q)
    return elbo


def setup_params(seed=0):
    pyro.clear_param_store()
    p = init_params(seed)
    for name in ("prior", "w", "q"):
        pyro.param(name, p[name].clone())
    return p


def param_grads():
    store = pyro.get_param_store()
    return {n: store.get_param(n).unconstrained().grad for n in ("prior", "w", "q")}


def reference(p):
    leaves = {n: p[n].clone().requires_grad_() for n in ("prior", "w", "q")}
    elbo = brute_elbo(leaves["prior"], leaves["w"], leaves["q"], p["x"])
    (-elbo.sum()).backward()
    return elbo.detach(), {n: t.grad for n, t in leaves.items()}


@pytest.mark.parametrize("chunk_size", [None, 3, 1])
def test_loss_and_gradient_match_brute_force(chunk_size):
    p = setup_params()
    elbo_ref, grads_ref = reference(p)
    est = EnumeratedELBO(chunk_size=chunk_size)
    loss = est.loss(model, guide, p["x"])
    assert loss == pytest.approx(-float(elbo_ref.sum()), rel=1e-9)
    torch.testing.assert_close(est.per_datum(model, guide, p["x"]), elbo_ref, **TOL)
    loss2 = est.loss_and_grads(model, guide, p["x"])
    assert loss2 == pytest.approx(loss, rel=1e-9)
    grads = param_grads()
    for name in ("prior", "w", "q"):
        assert grads[name] is not None, name
        torch.testing.assert_close(grads[name], grads_ref[name], **TOL)
    # differentiable_loss gives the same value and gradient
    for t in param_grads().values():
        t.zero_()
    dl = est.differentiable_loss(model, guide, p["x"])
    assert float(dl.detach()) == pytest.approx(loss, rel=1e-9)
    dl.backward()
    for name, g in param_grads().items():
        torch.testing.assert_close(g, grads_ref[name], **TOL)


def test_chunking_does_not_change_value_or_gradient():
    results = []
    for chunk_size in (None, 3):
        p = setup_params(seed=1)
        loss = EnumeratedELBO(chunk_size=chunk_size).loss_and_grads(model, guide, p["x"])
        results.append((loss, {n: g.clone() for n, g in param_grads().items()}))
    (l0, g0), (l1, g1) = results
    assert l0 == pytest.approx(l1, rel=1e-12)
    for name in g0:
        torch.testing.assert_close(g0[name], g1[name], rtol=1e-10, atol=1e-12)


# ---- two latent sites, guide q(z1|x) q(z2|z1,x) set to the exact posterior: ELBO = log p(x) --
A = torch.tensor([[1.5, -1.0, 0.2]], dtype=F64)
C = torch.tensor([0.3, 0.0, -0.4], dtype=F64)
W1 = torch.tensor([[1.0, -2.0]], dtype=F64)
W2 = torch.tensor([[0.5, 0.5], [-1.0, 1.0], [2.0, 0.0]], dtype=F64)
X2 = torch.tensor([[0.2, -1.0], [1.5, 0.3], [-0.7, 2.0]], dtype=F64)


def model2(x):
    with pyro.plate("data", x.shape[0]):
        z1 = pyro.sample("z1", dist.Bernoulli(torch.tensor([0.3], dtype=F64)).to_event(1))
        z2 = pyro.sample("z2", dist.OneHotCategorical(logits=C + z1 @ A))
        pyro.sample("x", dist.Normal(z1 @ W1 + z2 @ W2, 0.8).to_event(1), obs=x)


def brute_joint2(x):
    """log p(x, z1, z2) as [B, 2, K] (float64, explicit formulas)."""
    out = torch.empty(x.shape[0], 2, 3, dtype=F64)
    for b1 in (0, 1):
        z1 = torch.tensor([float(b1)], dtype=F64)
        lp1 = np.log(0.3) if b1 else np.log(0.7)
        lp2 = (C + z1 @ A).log_softmax(-1)
        for k in range(3):
            mean = z1 @ W1 + W2[k]
            ll = (-0.5 * ((x - mean) / 0.8) ** 2 - np.log(0.8) - 0.5 * np.log(2 * np.pi)).sum(-1)
            out[:, b1, k] = lp1 + lp2[k] + ll
    return out


def exact_guide_tables(x):
    lj = brute_joint2(x)
    log_px = lj.flatten(1).logsumexp(-1)
    post = (lj - log_px[:, None, None]).exp()  # [B, 2, K]
    q1 = post[:, 1].sum(-1)  # p(z1 = 1 | x)
    q2 = post / post.sum(-1, keepdim=True)  # p(z2 | z1, x)
    return log_px, q1, q2


def make_posterior_guide(x):
    _, q1, q2 = exact_guide_tables(x)

    def guide2(x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Bernoulli(q1.unsqueeze(-1)).to_event(1))
            probs = q2[:, 1] * z1 + q2[:, 0] * (1 - z1)  # z1 [..., 1] broadcasts over K
            pyro.sample("z2", dist.OneHotCategorical(probs=probs))

    return guide2


def test_exact_posterior_guide_gives_log_likelihood():
    log_px, _, _ = exact_guide_tables(X2)
    guide2 = make_posterior_guide(X2)
    for chunk_size in (None, 1, 4):
        elbo = EnumeratedELBO(chunk_size=chunk_size)
        torch.testing.assert_close(elbo.per_datum(model2, guide2, X2), log_px, **TOL)
        assert elbo.loss(model2, guide2, X2) == pytest.approx(-float(log_px.sum()), rel=1e-9)


def test_dependent_guide_matches_brute_force_for_generic_q():
    """A guide with q(z2 | z1) not equal to the posterior: ELBO < log p(x), equal to brute force."""
    lj = brute_joint2(X2)
    q1 = torch.tensor([0.2, 0.6, 0.9], dtype=F64)
    q2 = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]], dtype=F64)  # q(z2 | z1), same for all x

    def guide2(x):
        with pyro.plate("data", x.shape[0]):
            z1 = pyro.sample("z1", dist.Bernoulli(q1.unsqueeze(-1)).to_event(1))
            pyro.sample("z2", dist.OneHotCategorical(probs=q2[1] * z1 + q2[0] * (1 - z1)))

    log_q = torch.stack([(1 - q1).log()[:, None] + q2[0].log(), q1.log()[:, None] + q2[1].log()], 1)
    expected = (log_q.exp() * (lj - log_q)).flatten(1).sum(-1)
    got = EnumeratedELBO(chunk_size=5).per_datum(model2, guide2, X2)
    torch.testing.assert_close(got, expected, **TOL)
    assert (got < lj.flatten(1).logsumexp(-1)).all()
