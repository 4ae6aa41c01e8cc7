"""``BroadcastingMessenger``: standard Pyro distributions swapped for broadcasting ones under
enumeration give the same densities and gradients, and the exact objectives use them."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_dvae.distributions import BernoulliVector, BroadcastingIndependent
from pyro_dvae.infer import EnumeratedELBO, exact_log_likelihood
from pyro_dvae.infer.broadcasting import broadcasting_counterpart, unexpanded
from pyro_dvae.infer.structured_enumeration import StructuredEnumeration

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def _cases():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1, 6, generator=g, dtype=F64)
    probs = torch.rand(5, 1, 6, generator=g, dtype=F64)
    probs[0, 0, :2] = torch.tensor([0.0, 1.0], dtype=F64)  # exact 0 and 1: read from probs
    bits = torch.bernoulli(torch.full((4, 6), 0.5, dtype=F64), generator=g)
    onehot = torch.eye(3, dtype=F64)[torch.randint(3, (4, 2), generator=g)]
    cat_logits = torch.randn(5, 1, 2, 3, generator=g, dtype=F64)
    return [
        ("bernoulli-vector", dist.Bernoulli(logits=logits).to_event(1), bits, True),
        (
            "bernoulli-vector-expanded",
            dist.Bernoulli(logits=logits).expand([5, 4, 6]).to_event(1),
            bits,
            True,
        ),
        ("bernoulli-latent", dist.Bernoulli(logits=logits).to_event(1), bits, False),
        ("bernoulli-probs", dist.Bernoulli(probs=probs), bits, False),
        ("bernoulli-2-events", dist.Bernoulli(logits=logits).to_event(2), bits, True),
        ("one-hot", dist.OneHotCategorical(logits=cat_logits).to_event(1), onehot, False),
        ("one-hot-probs", dist.OneHotCategorical(probs=cat_logits.softmax(-1)), onehot, False),
    ]


@pytest.mark.parametrize("name, fn, value, observed", _cases(), ids=[c[0] for c in _cases()])
def test_swapped_distribution_has_the_same_density(name, fn, value, observed):
    swapped = broadcasting_counterpart(fn, observed=observed)
    assert swapped is not fn
    assert swapped.batch_shape == fn.batch_shape and swapped.event_shape == fn.event_shape
    if name.startswith("bernoulli-vector"):
        assert isinstance(swapped, BernoulliVector)
    expected = fn.log_prob(value)
    got = swapped.log_prob(value)
    assert got.shape == expected.shape
    finite = expected.isfinite()
    torch.testing.assert_close(got[finite], expected[finite], rtol=1e-12, atol=1e-12)
    assert torch.equal(got.isfinite(), finite)  # -inf where a probability is exactly 0


def test_user_subclasses_and_other_distributions_are_left_alone():
    class MyBernoulli(dist.Bernoulli):
        pass

    for fn in (
        MyBernoulli(logits=torch.zeros(3)),
        MyBernoulli(logits=torch.zeros(3)).to_event(1),
        dist.Normal(torch.zeros(3), 1.0).to_event(1),
        dist.Categorical(logits=torch.zeros(3)),
    ):
        assert broadcasting_counterpart(fn, observed=True) is fn


def test_unexpanded_is_a_cheap_view_with_the_same_gradient():
    base = torch.randn(7, 5, requires_grad=True)
    expanded = base.unsqueeze(1).expand(7, 100, 5)
    root = unexpanded(expanded, keep_rightmost=1)
    assert root.shape == (7, 1, 5) and root.data_ptr() == base.data_ptr()
    torch.testing.assert_close(root.expand(7, 100, 5), expanded)
    (root.expand(7, 100, 5).sin().sum()).backward()
    grad, base.grad = base.grad.clone(), None
    expanded.sin().sum().backward()
    torch.testing.assert_close(grad, base.grad)
    # a tensor that is not an expanded view is returned as it is
    plain = torch.randn(3, 4)
    assert unexpanded(plain) is plain


N, K, D = 2, 3, 10


def _models():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(N * K, D, generator=g, dtype=F64, requires_grad=True)
    enc = torch.randn(D, N * K, generator=g, dtype=F64, requires_grad=True)

    def model(x, vector=False):
        with pyro.plate("data", len(x)):
            z = pyro.sample(
                "z", dist.OneHotCategorical(logits=torch.zeros(N, K, dtype=F64)).to_event(1)
            )
            logits = z.flatten(-2) @ w
            lik = BernoulliVector(logits) if vector else dist.Bernoulli(logits=logits).to_event(1)
            pyro.sample("x", lik, obs=x)

    def guide(x, vector=False):
        with pyro.plate("data", len(x)):
            logits = (x @ enc).reshape(-1, N, K)
            pyro.sample("z", dist.OneHotCategorical(logits=logits).to_event(1))

    return model, guide, (w, enc)


def test_standard_syntax_model_uses_the_broadcasting_likelihood_and_agrees():
    model, guide, params = _models()
    x = torch.bernoulli(
        torch.full((8, D), 0.4, dtype=F64), generator=torch.Generator().manual_seed(2)
    )
    space = StructuredEnumeration(model, guide, (x,))
    model_trace, _ = space.traces(space.blocks[0])
    assert isinstance(model_trace.nodes["x"]["fn"], BernoulliVector)
    assert isinstance(model_trace.nodes["z"]["fn"], BroadcastingIndependent)
    losses, grads = [], []
    for vector in (False, True):
        loss = EnumeratedELBO().differentiable_loss(model, guide, x, vector=vector)
        grads.append(torch.autograd.grad(loss, params))
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        exact_log_likelihood(model, x),
        exact_log_likelihood(model, x, vector=True),
        rtol=1e-12,
        atol=1e-12,
    )
