"""ExactMarginalELBO: loss = -sum log p(x) and exact gradients, against brute-force torch sums over
``itertools.product`` differentiated by autograd; the guide term gets grad KL(q || p(z|x))."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from _models import (
    F64,
    brute_log_q,
    categorical_guide,
    categorical_model,
    categorical_params,
    load_params,
)
from _models import brute_log_joint as categorical_log_joint

from pyro_dvae.infer import ExactMarginalELBO

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded


N, K, D, B = 2, 3, 3, 5
TOL = dict(rtol=1e-6, atol=1e-9)  # float64; gradients of sums over 9 configurations
MODEL_PARAMS, GUIDE_PARAMS = ("prior", "w"), ("q",)
SIGMA = 0.9

model, guide = categorical_model(SIGMA), categorical_guide


def empty_guide(x):
    pass


def brute_log_joint(prior, w, x):
    """[B, K^N] log p(x, z) (explicit formulas), configurations in itertools.product order."""
    return categorical_log_joint(prior, w, x, SIGMA)


def init_params(seed=0):
    return categorical_params(N, K, D, B, seed, w_scale=1.5, x_scale=1.5)


def setup_params(seed=0):
    p = init_params(seed)
    load_params(p, MODEL_PARAMS + GUIDE_PARAMS)
    return p


def grads(names):
    store = pyro.get_param_store()
    return {n: store.get_param(n).unconstrained().grad for n in names}


def reference(p):
    leaves = {n: p[n].clone().requires_grad_() for n in MODEL_PARAMS + GUIDE_PARAMS}
    lj = brute_log_joint(leaves["prior"], leaves["w"], p["x"])
    log_px = lj.logsumexp(-1)
    (-log_px.sum()).backward()
    # KL(q || p(z|x)) with the model held fixed
    log_post = (lj - log_px[:, None]).detach()
    lq = brute_log_q(leaves["q"])
    kl = (lq.exp() * (lq - log_post)).sum()
    kl.backward()
    return log_px.detach(), float(kl.detach()), {n: t.grad for n, t in leaves.items()}


@pytest.mark.parametrize("chunk_size", [None, 2, 4])  # one chunk (9 configs), 5 chunks, 3 chunks
def test_loss_and_gradients_match_brute_force(chunk_size):
    p = setup_params()
    log_px, kl, ref = reference(p)
    assert kl > 0.1  # q is far from the posterior, so the guide term is non-trivial
    est = ExactMarginalELBO(chunk_size=chunk_size)
    assert est.loss(model, guide, p["x"]) == pytest.approx(-float(log_px.sum()), rel=1e-9)
    torch.testing.assert_close(est.log_likelihood(model, p["x"]), log_px, **TOL)
    loss = est.loss_and_grads(model, guide, p["x"])
    assert loss == pytest.approx(-float(log_px.sum()), rel=1e-9)
    got = grads(MODEL_PARAMS + GUIDE_PARAMS)
    for name in MODEL_PARAMS + GUIDE_PARAMS:
        assert got[name] is not None, name
        torch.testing.assert_close(got[name], ref[name], **TOL)


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_guide_term_does_not_change_model_gradients(chunk_size):
    results = {}
    for label, g, train_guide in (
        ("with_guide", guide, True),
        ("no_guide_sites", empty_guide, True),
        ("train_guide_off", guide, False),
    ):
        p = setup_params(seed=3)
        ExactMarginalELBO(chunk_size=chunk_size, train_guide=train_guide).loss_and_grads(
            model, g, p["x"]
        )
        results[label] = grads(MODEL_PARAMS + GUIDE_PARAMS)
    for label in ("no_guide_sites", "train_guide_off"):
        for name in MODEL_PARAMS:
            torch.testing.assert_close(results[label][name], results["with_guide"][name], **TOL)
    assert results["train_guide_off"]["q"] is None or bool(
        (results["train_guide_off"]["q"] == 0).all()
    )
    assert results["with_guide"]["q"].abs().sum() > 0


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_guide_factor_enters_neither_term(chunk_size):
    """A z-dependent ``pyro.factor`` in the guide is not part of q(z|x): value and every gradient
    equal those without it (it must not leak into the KL(q || p(z|x)) term)."""
    v = torch.tensor([0.9, -1.4, 0.3, 2.0, -0.7, 0.5], dtype=F64)

    def guide_with_factor(x):
        q = pyro.param("q")
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.OneHotCategorical(logits=q).to_event(1))
            pyro.factor("f", z.flatten(-2) @ v, has_rsample=False)

    results = {}
    for label, g in (("plain", guide), ("factor", guide_with_factor)):
        p = setup_params(seed=5)
        loss = ExactMarginalELBO(chunk_size=chunk_size).loss_and_grads(model, g, p["x"])
        results[label] = loss, grads(MODEL_PARAMS + GUIDE_PARAMS)
    assert results["factor"][0] == pytest.approx(results["plain"][0], rel=1e-12)
    for name in MODEL_PARAMS + GUIDE_PARAMS:
        torch.testing.assert_close(results["factor"][1][name], results["plain"][1][name], **TOL)


def test_differentiable_loss_matches_brute_force():
    p = setup_params(seed=4)
    log_px, _, ref = reference(p)
    dl = ExactMarginalELBO(chunk_size=4).differentiable_loss(model, guide, p["x"])
    assert float(dl.detach()) == pytest.approx(-float(log_px.sum()), rel=1e-9)
    dl.backward()
    got = grads(MODEL_PARAMS)
    for name in MODEL_PARAMS:
        torch.testing.assert_close(got[name], ref[name], **TOL)


def test_guide_at_posterior_gets_zero_gradient():
    """With q(z|x) equal to the exact posterior (N=1 group), KL = 0 and its gradient vanishes."""
    p = init_params(seed=5)
    prior = p["prior"][:1]
    w = p["w"][:K]
    lp_prior = prior.log_softmax(-1)[0]
    ll = torch.stack(
        [(-0.5 * ((p["x"] - w[k]) / 0.9) ** 2).sum(-1) for k in range(K)], -1
    )  # [B, K], constants cancel in the posterior
    post_logits = lp_prior + ll
    pyro.clear_param_store()
    pyro.param("prior", prior.clone())
    pyro.param("w", w.clone())
    pyro.param("q", post_logits.unsqueeze(1).clone())  # [B, 1, K]
    ExactMarginalELBO().loss_and_grads(model, guide, p["x"])
    torch.testing.assert_close(
        grads(GUIDE_PARAMS)["q"], torch.zeros(B, 1, K, dtype=F64), atol=1e-10, rtol=0
    )


def test_differentiable_loss_has_the_gradient_of_loss_and_grads():
    """Encoder (guide) and decoder gradients agree between the two entry points."""
    from pyro_dvae import DiscreteVAE

    vae = DiscreteVAE(6, "2x3", encoder_hidden=(8,))
    x = (torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float()
    grads = []
    for use_differentiable in (False, True):
        vae.zero_grad()
        elbo = ExactMarginalELBO(chunk_size=4)
        if use_differentiable:
            elbo.differentiable_loss(vae.model, vae.guide, x).backward()
        else:
            elbo.loss_and_grads(vae.model, vae.guide, x)
        grads.append({n: p.grad.clone() for n, p in vae.named_parameters()})
    assert any(float(g.abs().max()) > 0 for n, g in grads[0].items() if "encoder" in n)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-6)
