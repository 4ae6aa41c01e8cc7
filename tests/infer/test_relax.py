"""Tests for the ``relax`` effect handler (discrete latent -> Concrete / straight-through)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution

from pyro_dvae.distributions import (
    ConcreteBernoulli,
    ConcreteOneHotCategorical,
    StraightThroughBernoulli,
    StraightThroughOneHotCategorical,
)
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import relax, relax_distribution
from pyro_dvae.infer.relax import discrete_counterpart

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded


def leaf(fn):
    while isinstance(fn, (dist.Independent, ExpandedDistribution, MaskedDistribution)):
        fn = fn.base_dist
    return fn


LOGITS = torch.tensor([[0.3, -0.2, 1.0], [0.0, 0.5, -1.0]])
MASK = torch.tensor([True, False, True, True])


def model():
    with pyro.plate("data", 4):
        pyro.sample("cat", dist.OneHotCategorical(logits=LOGITS).to_event(1))
        pyro.sample("bern", dist.Bernoulli(logits=torch.tensor([0.2, -0.3])).to_event(1))
        pyro.sample(
            "expanded", ExpandedDistribution(dist.Bernoulli(logits=torch.tensor(0.4)), (4,))
        )
        pyro.sample("masked", dist.OneHotCategorical(logits=LOGITS[0]).mask(MASK))
        pyro.sample(
            "masked_event",
            dist.Bernoulli(logits=torch.zeros(4, 3)).mask(MASK.unsqueeze(-1)).to_event(1),
        )
        pyro.sample("normal", dist.Normal(0.0, 1.0))
        pyro.sample("observed", dist.Bernoulli(0.3), obs=torch.ones(4))
        pyro.sample(
            "observed_cat", dist.OneHotCategorical(logits=LOGITS[0]), obs=torch.eye(3)[[0, 1, 2, 0]]
        )


RELAXED = ["cat", "bern", "expanded", "masked", "masked_event"]


@pytest.mark.parametrize(
    "straight_through, cat_cls, bern_cls",
    [
        (False, ConcreteOneHotCategorical, ConcreteBernoulli),
        (True, StraightThroughOneHotCategorical, StraightThroughBernoulli),
    ],
)
def test_relax_swaps_discrete_latents(straight_through, cat_cls, bern_cls):
    plain = poutine.trace(model).get_trace()
    trace = poutine.trace(
        relax(model, temperature=0.7, straight_through=straight_through)
    ).get_trace()
    expected_leaf = {
        "cat": cat_cls,
        "bern": bern_cls,
        "expanded": bern_cls,
        "masked": cat_cls,
        "masked_event": bern_cls,
    }
    for name, cls in expected_leaf.items():
        site = trace.nodes[name]
        assert type(leaf(site["fn"])) is cls, name
        assert float(leaf(site["fn"]).temperature) == pytest.approx(0.7)
        assert site["fn"].batch_shape == plain.nodes[name]["fn"].batch_shape, name
        assert site["fn"].event_shape == plain.nodes[name]["fn"].event_shape, name
        # the original discrete distribution is recorded, unchanged
        discrete = discrete_counterpart(site["fn"])
        assert not isinstance(leaf(discrete), (ConcreteOneHotCategorical, ConcreteBernoulli))
        assert type(leaf(discrete)) is type(leaf(plain.nodes[name]["fn"]))
        torch.testing.assert_close(leaf(discrete).logits, leaf(plain.nodes[name]["fn"]).logits)
        assert torch.isfinite(site["fn"].log_prob(site["value"])).all()
        # same parameters as the discrete distribution
        torch.testing.assert_close(
            *torch.broadcast_tensors(leaf(site["fn"]).logits, leaf(discrete).logits)
        )
    # masking is preserved: masked-out elements contribute exactly 0 to the log-density
    for name in ("masked", "masked_event"):
        site = trace.nodes[name]
        assert isinstance(
            site["fn"] if name == "masked" else site["fn"].base_dist, MaskedDistribution
        )
        lp = site["fn"].log_prob(site["value"])
        assert lp[1] == 0 and (lp[MASK] != 0).all()
    # relaxed samples are in the open simplex / interval, ST samples are exactly discrete
    cat, bern = trace.nodes["cat"]["value"], trace.nodes["bern"]["value"]
    if straight_through:
        assert ((cat == 0) | (cat == 1)).all() and (cat.sum(-1) == 1).all()
        assert ((bern == 0) | (bern == 1)).all()
    else:
        assert ((cat > 0) & (cat < 1)).all()
        torch.testing.assert_close(cat.sum(-1), torch.ones(4, 2))
        assert ((bern > 0) & (bern < 1)).all()
    # continuous and observed sites are left alone
    for name in ("normal", "observed", "observed_cat"):
        site = trace.nodes[name]
        assert type(site["fn"]) is type(plain.nodes[name]["fn"]), name
        assert discrete_counterpart(site["fn"]) is None, name
    assert torch.equal(trace.nodes["observed"]["value"], torch.ones(4))


def test_relax_sites_restricts():
    trace = poutine.trace(relax(model, temperature=0.5, sites=["bern", "masked"])).get_trace()
    for name in RELAXED:
        relaxed = discrete_counterpart(trace.nodes[name]["fn"]) is not None
        assert relaxed == (name in ("bern", "masked")), name
    assert type(leaf(trace.nodes["cat"]["fn"])) is dist.OneHotCategorical
    v = trace.nodes["cat"]["value"]
    assert ((v == 0) | (v == 1)).all()


def test_relax_categorical_raises():
    def cat_model():
        pyro.sample("z", dist.Categorical(logits=torch.zeros(3)))

    with pytest.raises(DVAEInputError, match="OneHotCategorical"):
        relax(cat_model, temperature=0.5)()
    with pytest.raises(DVAEInputError):
        relax_distribution(dist.Categorical(logits=torch.zeros(3)).expand([2]).to_event(1), 1.0)

    # an observed Categorical site is fine (it is not relaxed)
    def obs_model():
        pyro.sample("x", dist.Categorical(logits=torch.zeros(3)), obs=torch.tensor(1))

    relax(obs_model, temperature=0.5)()


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_relax_rejects_non_positive_temperature(bad):
    with pytest.raises(DVAEInputError, match="temperature"):
        relax(model, temperature=bad)


def test_relax_distribution_passthrough():
    assert relax_distribution(dist.Normal(0.0, 1.0), 0.5) is None
    assert relax_distribution(dist.Normal(torch.zeros(3), 1.0).to_event(1), 0.5) is None
    c = ConcreteOneHotCategorical(0.3, logits=torch.zeros(3))
    assert relax_distribution(c, 0.9) is c


def test_nested_relax_relaxes_once():
    trace = poutine.trace(relax(relax(model, temperature=0.5), temperature=2.0)).get_trace()
    site = trace.nodes["cat"]
    assert isinstance(leaf(site["fn"]), ConcreteOneHotCategorical)
    assert type(leaf(discrete_counterpart(site["fn"]))) is dist.OneHotCategorical


def test_relax_as_context_manager():
    with poutine.trace() as tr, relax(temperature=0.5):
        model()
    assert isinstance(leaf(tr.trace.nodes["cat"]["fn"]), ConcreteOneHotCategorical)
