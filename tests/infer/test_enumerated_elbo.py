"""EnumeratedELBO: the value and the gradient of sum_z q(z|x) [log p(x,z) - log q(z|x)] against a
brute-force torch expression over ``itertools.product`` (autograd gives the reference gradient)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from _models import (
    F64,
    X2,
    brute_log_joint,
    brute_log_q,
    categorical_guide,
    categorical_model,
    categorical_params,
    chain_guide,
    load_params,
    two_site_log_joint,
    two_site_model,
)

from pyro_dvae.infer import EnumeratedELBO

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded


N, K, D, B = 2, 3, 3, 4
SIGMA = 0.9
TOL = dict(rtol=1e-6, atol=1e-9)  # float64 throughout; sums of <= 9 terms

model, guide = categorical_model(SIGMA), categorical_guide


def brute_elbo(prior, w, q, x):
    """Per-datum exact ELBO by explicit summation (differentiable, torch, float64)."""
    log_p, log_q = brute_log_joint(prior, w, x, SIGMA), brute_log_q(q)
    return (log_q.exp() * (log_p - log_q)).sum(-1)


def setup_params(seed=0):
    p = categorical_params(N, K, D, B, seed, x_scale=1.5)
    load_params(p)
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


def test_guide_factor_counts_as_log_q_like_trace_elbo():
    """``pyro.factor("f", f(z))`` in the guide: ELBO = E_q[log p - log q - f], as in Pyro's
    Trace_ELBO, with f depending on the enumerated z (brute force over itertools.product)."""
    import itertools

    p = setup_params(seed=2)
    v = torch.tensor([0.4, -1.1, 0.7, 0.2, 1.3, -0.6], dtype=F64)  # f(z) = flatten(z) . v

    def guide_factor_only(x):
        q = pyro.param("q")
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.OneHotCategorical(logits=q).to_event(1))
            pyro.factor("f", z.flatten(-2) @ v, has_rsample=False)

    f = torch.stack(
        [sum(v[g * K + idx[g]] for g in range(N)) for idx in itertools.product(range(K), repeat=N)]
    )
    log_p, log_q = brute_log_joint(p["prior"], p["w"], p["x"], SIGMA), brute_log_q(p["q"])
    expected = (log_q.exp() * (log_p - log_q - f)).sum(-1)
    got = EnumeratedELBO(chunk_size=4).per_datum(model, guide_factor_only, p["x"])
    torch.testing.assert_close(got, expected, **TOL)
    assert not torch.allclose(got, brute_elbo(p["prior"], p["w"], p["q"], p["x"]))


def test_guide_factor_outside_the_data_plate_counts_once():
    """A global ``pyro.factor`` in the guide counts once as part of log q (as in Pyro's
    ELBOs), not once per datum or per configuration; per-datum values leave it out."""
    p = setup_params()

    def guide_global_factor(x):
        guide(x)
        pyro.factor("f", torch.tensor(1.5, dtype=F64), has_rsample=False)

    expected = brute_elbo(p["prior"], p["w"], p["q"], p["x"])
    got = EnumeratedELBO(chunk_size=4).loss(model, guide_global_factor, p["x"])
    assert got == pytest.approx(-float(expected.sum()) + 1.5, rel=1e-9)


# ---- two latent sites, guide q(z1|x) q(z2|z1,x) set to the exact posterior: ELBO = log p(x) --
model2, brute_joint2 = two_site_model, two_site_log_joint


def exact_guide_tables(x):
    lj = brute_joint2(x)
    log_px = lj.flatten(1).logsumexp(-1)
    post = (lj - log_px[:, None, None]).exp()  # [B, 2, K]
    q1 = post[:, 1].sum(-1)  # p(z1 = 1 | x)
    q2 = post / post.sum(-1, keepdim=True)  # p(z2 | z1, x)
    return log_px, q1, q2


def make_posterior_guide(x):
    _, q1, q2 = exact_guide_tables(x)
    return chain_guide(q1, q2)


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
