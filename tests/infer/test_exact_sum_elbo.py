"""ExactSumELBO, the base of the ELBOs that sum discrete sites: Pyro's ELBO interface
(``ELBOModule``), streamed loss pieces, and the one ``num_particles`` check."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import ELBO
from pyro.infer.elbo import ELBOModule

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import EnumeratedELBO, ExactMarginalELBO
from pyro_dvae.infer.exact_sum_elbo import ExactSumELBO, LossTerm

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

X = torch.tensor([0.0, 1.0, 2.0])


def model(x):
    loc = pyro.param("loc", torch.tensor(1.5))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(loc * z, 1.0), obs=x)


def guide(x):
    p = pyro.param("p", torch.tensor(0.6), constraint=dist.constraints.unit_interval)
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Bernoulli(p))


class _Module(torch.nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


@pytest.mark.parametrize("elbo", [EnumeratedELBO(), ExactMarginalELBO(chunk_size=1)])
def test_is_a_pyro_elbo_with_its_elbo_module(elbo):
    assert isinstance(elbo, ExactSumELBO) and isinstance(elbo, ELBO)
    module = elbo(_Module(model), _Module(guide))
    assert isinstance(module, ELBOModule)
    assert torch.equal(module(X), elbo.differentiable_loss(model, guide, X))


@pytest.mark.parametrize("elbo", [EnumeratedELBO(chunk_size=1), ExactMarginalELBO(chunk_size=1)])
def test_loss_and_grads_agrees_with_loss_and_differentiable_loss(elbo):
    guide(X), model(X)
    params = [pyro.param(n).unconstrained() for n in ("loc", "p")]
    loss = elbo.loss_and_grads(model, guide, X)
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    elbo.differentiable_loss(model, guide, X).backward()
    assert loss == pytest.approx(elbo.loss(model, guide, X), rel=1e-6)
    for grad, p in zip(grads, params):
        assert torch.allclose(grad, p.grad, rtol=1e-5, atol=1e-7)


def test_pieces_are_back_propagated_one_at_a_time():
    shared = torch.tensor(2.0, requires_grad=True)
    seen = []

    class TwoPieces(ExactSumELBO):
        def _loss_terms(self, model, guide, args, kwargs):
            square = shared * shared  # one graph, read by both pieces
            yield LossTerm(square, square, retain_graph=True)
            seen.append(float(shared.grad))  # the first piece is back-propagated already
            yield LossTerm(0.0, 3 * square)

    assert TwoPieces().loss_and_grads(None, None) == 4.0
    assert seen == [4.0] and float(shared.grad) == 16.0
    with pytest.raises(NotImplementedError, match="draws no traces"):
        TwoPieces()._get_trace(None, None, (), {})


@pytest.mark.parametrize("cls", [EnumeratedELBO, ExactSumELBO])
def test_num_particles_is_checked_once(cls):
    with pytest.raises(DVAEInputError, match="num_particles must be >= 1"):
        cls(num_particles=0)
