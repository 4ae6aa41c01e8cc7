"""PairMembersMessenger: DisARM's base draws and antithetic members in one guide run."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer.pair_members import PairMembersMessenger

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

UNITS = 1000


def run(draw: PairMembersMessenger, guide, size: int):
    return pyro.poutine.trace(draw(pyro.plate("members", size, dim=-1)(guide))).get_trace()


def test_joint_members_are_antithetic():
    """A particle plate of 2 x 2: particles 2-3 are the antithetic members of particles 0-1
    (at logit 0, the complements), for Bernoulli and stick-breaking sites."""

    def guide():
        pyro.sample("b", dist.Bernoulli(logits=torch.zeros(UNITS)).to_event(1))
        pyro.sample("c", dist.OneHotCategorical(logits=torch.zeros(UNITS, 2)).to_event(1))

    draw = PairMembersMessenger(2, 1, True, [(0, None)], ["b", "c"])
    trace = run(draw, guide, 4)
    for name in ("b", "c"):
        value = trace.nodes[name]["value"]
        assert value.shape[0] == 4
        assert torch.equal(value[2:], 1 - value[:2])
        assert not torch.equal(value[0], value[1])  # the pairs are independent
    assert set(draw.noise) == {"b", "c"}


def test_sequential_members_copy_flip_and_redraw():
    """Sites a (Bernoulli), s (Normal), c (Bernoulli); member 1 flips a and redraws the rest,
    member 2 copies a and s and flips c."""

    def guide():
        pyro.sample("a", dist.Bernoulli(logits=torch.zeros(UNITS)).to_event(1))
        pyro.sample("s", dist.Normal(torch.zeros(UNITS), 1.0).to_event(1))
        pyro.sample("c", dist.Bernoulli(logits=torch.zeros(UNITS)).to_event(1))

    members = [(0, frozenset({"a"})), (2, frozenset({"c"}))]
    trace = run(PairMembersMessenger(1, 1, False, members, ["a", "s", "c"]), guide, 3)
    a, s, c = (trace.nodes[n]["value"] for n in ("a", "s", "c"))
    assert torch.equal(a[1], 1 - a[0]) and torch.equal(a[2], a[0])
    assert torch.equal(s[2], s[0]) and not torch.equal(s[1], s[0])
    assert torch.equal(c[2], 1 - c[0])
    agree = (c[1] == c[0]).float().mean()  # a fresh draw: agrees half the time
    assert 0.4 < agree < 0.6, agree


def test_a_joint_member_whose_distribution_changed_is_refused():
    def guide():
        a = pyro.sample("a", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("b", dist.Bernoulli(logits=a).to_event(1))

    with pytest.raises(DVAEInputError, match="coupling='sequential'"):
        run(PairMembersMessenger(1, 1, False, [(0, None)], ["a", "b"]), guide, 2)


def test_sites_out_of_the_first_runs_order_are_refused():
    def guide():
        pyro.sample("b", dist.Bernoulli(logits=torch.zeros(3)).to_event(1))

    with pytest.raises(DVAEInputError, match="vectorize_pairs=False"):
        run(PairMembersMessenger(1, 1, False, [(0, None)], ["a", "b"]), guide, 2)
