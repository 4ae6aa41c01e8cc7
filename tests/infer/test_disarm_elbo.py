"""DisARMELBO (Dong, Mnih & Tucker 2020, arXiv:2006.10680) against the exact gradient by
enumeration: a Bernoulli latent model, a OneHotCategorical model (the stick-breaking categorical
DisARM of Dong, Mnih & Tucker 2021, arXiv:2106.08056), the two-site user model with a dependent
guide (sequential pairs) and with a factorized one (joint pair), and the variance against
REINFORCE with the same two model evaluations per step.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from _estimator_checks import (
    USER_DATA,
    estimates,
    factorized_guide,
    flat_exact,
    user_guide,
    user_model,
    z_scores,
)

import pyro_dvae.infer.disarm_elbo as disarm_module
from pyro_dvae import DiscreteVAE
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import RLOOELBO, DisARMELBO, ScoreFunctionELBO, build_elbo
from pyro_dvae.infer.disarm_elbo import _PairMessenger

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

NUM_CALLS = 25
# P(|t_24| > 4.5) ~ 1.5e-4 per coordinate: < 0.3% family-wise over <= 18 coordinates for an
# unbiased estimator. Measured max |z| at seed 0: 2.5 (Bernoulli model), 1.7 (user model,
# sequential), 1.6 (factorized, joint); the wrong-sign variant below reaches > 10.
Z_THRESHOLD = 4.5

W = torch.tensor([[1.0, -2.0], [0.5, 1.5], [-1.0, 0.3]])
BERNOULLI_DATA = torch.tensor([[0.5, -1.0], [1.5, 0.5], [-1.0, 2.0]]).repeat(100, 1)
GUIDE_COORDS = 9  # enc (6) and enc_b (3) come first in name order

MU = torch.tensor([-2.0, -0.5, 0.7, 2.5])
CATEGORICAL_DATA = torch.tensor([-1.5, 0.3, 2.0]).repeat(100)
CATEGORICAL_GUIDE_COORDS = 8  # enc (2 x 4) comes first in name order


def bernoulli_model(x):
    """Three Bernoulli units per datum, x ~ Normal(z @ w, 1) in 2-d."""
    prior = pyro.param("prior", torch.tensor([0.2, -0.3, 0.1]))
    w = pyro.param("w", W.clone())
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Bernoulli(logits=prior).to_event(1))
        pyro.sample("x", dist.Normal(z @ w, 1.0).to_event(1), obs=x)


def bernoulli_guide(x):
    enc = pyro.param("enc", torch.tensor([[0.3, -0.2, 0.5], [0.1, 0.4, -0.3]]))
    b = pyro.param("enc_b", torch.tensor([0.1, -0.1, 0.0]))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Bernoulli(logits=x @ enc + b).to_event(1))


def categorical_model(x):
    """One four-class OneHotCategorical per datum, x ~ Normal(mu[z], 1)."""
    prior = pyro.param("prior", torch.tensor([0.2, -0.3, 0.1, 0.0]))
    mu = pyro.param("mu", MU.clone())
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.OneHotCategorical(logits=prior))
        pyro.sample("x", dist.Normal(z @ mu, 1.0), obs=x)


def categorical_guide(x):
    w = pyro.param("enc", torch.tensor([[-0.8, -0.2, 0.3, 0.9], [0.1, 0.3, -0.2, -0.1]]))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.OneHotCategorical(logits=x.unsqueeze(-1) * w[0] + w[1]))


def test_the_loops_antithetic_pair():
    """At logit 0 the antithetic member is the complement: b~ = 1[1 - u < 1/2] = 1 - b (the
    weights: tests/infer/test_antithetic.py)."""

    def guide():
        pyro.sample("z", dist.Bernoulli(logits=torch.zeros(1000)).to_event(1))

    base = _PairMessenger(record=True)
    b = pyro.poutine.trace(base(guide)).get_trace().nodes["z"]["value"]
    anti = _PairMessenger(noise=base.noise, flip=frozenset({"z"}))
    b_anti = pyro.poutine.trace(anti(guide)).get_trace().nodes["z"]["value"]
    assert torch.equal(b_anti, 1 - b)


@pytest.mark.parametrize(
    "model, guide, data, loop_runs",
    [
        (bernoulli_model, bernoulli_guide, BERNOULLI_DATA, 3 * 2),  # joint: 2 runs per pair
        (user_model, user_guide, USER_DATA, 3 * 3),  # sequential: 1 + 2 sites per pair
    ],
    ids=["joint", "sequential"],
)
def test_vectorized_pairs_run_the_guide_once_per_step(model, guide, data, loop_runs):
    calls = []

    def counted_guide(x):
        calls.append(1)
        guide(x)

    for vectorize_pairs, expected in ((True, 1), (False, loop_runs)):
        elbo = DisARMELBO(num_particles=3, vectorize_pairs=vectorize_pairs)
        elbo.loss_and_grads(model, counted_guide, data)  # checks, guesses
        calls.clear()
        elbo.loss_and_grads(model, counted_guide, data)
        assert len(calls) == expected


def test_a_model_that_does_not_broadcast_gets_a_one_line_error():
    """z.reshape(len(x), 3) drops the pair dim: vectorized pairs refuse it in one line naming
    the fix; the loop (vectorize_pairs=False) still runs it."""

    def rigid_model(x):
        w = pyro.param("w", W.clone())
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(3)).to_event(1))
            pyro.sample("x", dist.Normal(z.reshape(len(x), 3) @ w, 1.0).to_event(1), obs=x)

    with pytest.raises(DVAEInputError, match="vectorize_pairs=False") as info:
        DisARMELBO(vectorize_pairs=True).loss(rigid_model, bernoulli_guide, BERNOULLI_DATA)
    assert "\n" not in str(info.value) and "broadcast" in str(info.value)
    DisARMELBO(vectorize_pairs=False).loss(rigid_model, bernoulli_guide, BERNOULLI_DATA)


def test_vectorized_pairs_refuse_a_guide_whose_sites_change():
    """The members' layout comes from the guide's first run: a later step that runs other
    latent sites gets a one-line error naming the fix."""

    def guide(x, extra=False):
        with pyro.plate("data", len(x)):
            if extra:
                pyro.sample("extra", dist.Bernoulli(0.5))
            pyro.sample(
                "z", dist.Bernoulli(logits=x @ pyro.param("enc", torch.ones(2, 3))).to_event(1)
            )

    def model(x, extra=False):
        with pyro.plate("data", len(x)):
            if extra:
                pyro.sample("extra", dist.Bernoulli(0.5))
            z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(3)).to_event(1))
            pyro.sample("x", dist.Normal(z @ W, 1.0).to_event(1), obs=x)

    elbo = DisARMELBO(vectorize_pairs=True)
    elbo.loss(model, guide, BERNOULLI_DATA)
    with pytest.raises(DVAEInputError, match="vectorize_pairs=False") as info:
        elbo.loss(model, guide, BERNOULLI_DATA, extra=True)
    assert "'extra'" in str(info.value) and "\n" not in str(info.value)
    DisARMELBO(vectorize_pairs=False).loss(model, guide, BERNOULLI_DATA, extra=True)


@pytest.mark.slow  # seconds of sampling: make test-fast skips it
@pytest.mark.parametrize(
    "model, guide, data, guide_coords",
    [
        (bernoulli_model, bernoulli_guide, BERNOULLI_DATA, slice(0, GUIDE_COORDS)),
        (user_model, user_guide, USER_DATA, slice(4, None)),  # after a (3) and c (1)
    ],
    ids=["joint", "sequential"],
)
def test_several_vectorized_pairs_are_the_loops_estimator(model, guide, data, guide_coords):
    """Three pairs per step, joint (Bernoulli model) or sequential (the dependent user guide):
    unbiased, and the same estimator as the pairs in a loop (the average over pairs, not the
    sum: a sum would fail the z-test). Guide-gradient variance over 200 estimates, vectorized /
    loop measured at seeds 0-2: 0.94-1.08 (joint), 0.89-1.07 (sequential); max |z| 1.6-2.8.
    Bounds (0.7, 1.4)."""
    exact = flat_exact(model, guide, data)
    est = {
        v: estimates(DisARMELBO(num_particles=3, vectorize_pairs=v), model, guide, data, 200)
        for v in (False, True)
    }
    z = z_scores(est[True], exact)
    assert z.abs().max() < Z_THRESHOLD, z
    ratio = est[True][:, guide_coords].var(0).sum() / est[False][:, guide_coords].var(0).sum()
    assert 0.7 < ratio < 1.4, ratio


@pytest.mark.parametrize("vectorize_pairs", [False, True], ids=["loop", "vectorized"])
def test_mean_gradient_matches_exact_bernoulli(vectorize_pairs):
    exact = flat_exact(bernoulli_model, bernoulli_guide, BERNOULLI_DATA)
    elbo = DisARMELBO(vectorize_pairs=vectorize_pairs)
    est = estimates(elbo, bernoulli_model, bernoulli_guide, BERNOULLI_DATA, NUM_CALLS)
    assert est.shape == (NUM_CALLS, 18)
    z = z_scores(est, exact)
    assert z.abs().max() < Z_THRESHOLD, z


@pytest.mark.parametrize("vectorize_pairs", [False, True], ids=["loop", "vectorized"])
def test_a_wrong_sign_fails_the_same_test(monkeypatch, vectorize_pairs):
    """The test can fail: signing each unit by (-1)^{b} instead of (-1)^{b~} biases it."""
    exact = flat_exact(bernoulli_model, bernoulli_guide, BERNOULLI_DATA)
    right = disarm_module.disarm_weights
    monkeypatch.setattr(disarm_module, "disarm_weights", lambda b, b_anti, a: right(b_anti, b, a))
    elbo = DisARMELBO(vectorize_pairs=vectorize_pairs)
    est = estimates(elbo, bernoulli_model, bernoulli_guide, BERNOULLI_DATA, NUM_CALLS)
    assert z_scores(est, exact).abs().max() > Z_THRESHOLD


@pytest.mark.parametrize("vectorize_pairs", [False, True], ids=["loop", "vectorized"])
def test_mean_gradient_matches_exact_categorical(vectorize_pairs):
    """Measured max |z| at seed 0: 2.8 with 25 calls, 1.9 with 400."""
    exact = flat_exact(categorical_model, categorical_guide, CATEGORICAL_DATA)
    elbo = DisARMELBO(vectorize_pairs=vectorize_pairs)
    est = estimates(elbo, categorical_model, categorical_guide, CATEGORICAL_DATA, NUM_CALLS)
    assert est.shape == (NUM_CALLS, 16)
    z = z_scores(est, exact)
    assert z.abs().max() < Z_THRESHOLD, z


@pytest.mark.parametrize("vectorize_pairs", [False, True], ids=["loop", "vectorized"])
def test_dropping_the_longer_members_term_fails_the_same_test(monkeypatch, vectorize_pairs):
    """The test can fail: without the score term on the units only the longer member reads,
    the categorical estimate is biased (max |z| > 30)."""
    exact = flat_exact(categorical_model, categorical_guide, CATEGORICAL_DATA)
    right = disarm_module.stick_breaking_signal

    def without_longer(*args):
        same, longer = right(*args)
        return same, torch.zeros_like(longer)

    monkeypatch.setattr(disarm_module, "stick_breaking_signal", without_longer)
    elbo = DisARMELBO(vectorize_pairs=vectorize_pairs)
    est = estimates(elbo, categorical_model, categorical_guide, CATEGORICAL_DATA, NUM_CALLS)
    assert z_scores(est, exact).abs().max() > Z_THRESHOLD


def test_categorical_variance_below_the_fallback_and_reinforce():
    """Guide-gradient variance on the OneHotCategorical model, two model evaluations per step,
    200 estimates. Measured at seeds 0-2: stick-breaking DisARM 593-667, the two-sample
    leave-one-out fallback (categorical="loo") 724-858, RLOO with 2 samples 746-844, REINFORCE
    averaged over 2 samples 1815-2027 (stick-breaking / REINFORCE 0.30-0.34, / fallback
    0.72-0.84)."""

    def guide_variance(elbo):
        est = estimates(elbo, categorical_model, categorical_guide, CATEGORICAL_DATA, 200)
        return est[:, :CATEGORICAL_GUIDE_COORDS].var(0).sum()

    stick = guide_variance(DisARMELBO())
    fallback = guide_variance(DisARMELBO(categorical="loo"))
    plain = guide_variance(ScoreFunctionELBO(num_particles=2))
    assert stick < fallback
    assert stick < 0.5 * plain


@pytest.mark.parametrize("categorical", ["stick-breaking", "loo"])
@pytest.mark.parametrize(
    "guide, coupling",
    [(user_guide, "sequential"), (factorized_guide, "joint")],
    ids=["dependent-guide", "factorized-guide"],
)
@pytest.mark.parametrize("vectorize_pairs", [False, True], ids=["loop", "vectorized"])
def test_user_model_bernoulli_and_categorical_sites(guide, coupling, categorical, vectorize_pairs):
    """Bernoulli z1 gets DisARM, the integer Categorical z2 the stick-breaking DisARM (or, with
    categorical="loo", the two-sample leave-one-out score function); 'auto' picks sequential
    pairs when q(z2) reads z1, one joint pair otherwise."""
    exact = flat_exact(user_model, guide, USER_DATA)
    elbo = DisARMELBO(categorical=categorical, vectorize_pairs=vectorize_pairs)
    est = estimates(elbo, user_model, guide, USER_DATA, NUM_CALLS)
    assert list(elbo._auto.values()) == [coupling]
    z = z_scores(est, exact)
    assert z.abs().max() < Z_THRESHOLD, z


GROUPS_DATA = torch.tensor([[[0.5, -1.0], [1.5, 0.2], [-0.3, 0.8]]]).repeat(4, 1, 1) + torch.tensor(
    [0.0, 0.5, -0.5, 1.0]
).reshape(4, 1, 1)


def nested_model(x):
    """A Bernoulli per group and a Categorical per item in nested plates, in plain Pyro."""
    w = pyro.param("w", torch.tensor([[1.0, -1.0], [0.5, 0.8]]))
    p = pyro.param("p", torch.tensor([0.2, -0.1]))
    with pyro.plate("groups", x.shape[0], dim=-2):
        g = pyro.sample("g", dist.Bernoulli(logits=p[0]))
        with pyro.plate("items", x.shape[1], dim=-1):
            logits = torch.stack([p[1] + g, -g], -1)
            logits = logits.expand(torch.broadcast_shapes(g.shape, x.shape[1:2]) + (2,))
            z = pyro.sample("z", dist.Categorical(logits=logits))
            loc = z.to(x.dtype).unsqueeze(-1) * w[0] + g.unsqueeze(-1) * w[1]
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def nested_guide(x):
    a = pyro.param("a", torch.tensor([0.3, -0.2]))
    b = pyro.param("b", torch.tensor([[0.1, -0.4], [0.2, 0.3]]))
    with pyro.plate("groups", x.shape[0], dim=-2):
        pyro.sample("g", dist.Bernoulli(logits=x.sum((-1, -2)).unsqueeze(-1) * a[0] + a[1]))
        with pyro.plate("items", x.shape[1], dim=-1):
            pyro.sample("z", dist.Categorical(logits=x @ b))


@pytest.mark.parametrize("vectorize_pairs", [False, True], ids=["loop", "vectorized"])
def test_nested_plates_group_and_item_latents(vectorize_pairs):
    """A group-level Bernoulli and item-level Categorical in nested plates (each group is a
    datum: its items' latents enter its f): unbiased against the enumerated gradient."""
    exact = flat_exact(nested_model, nested_guide, GROUPS_DATA)
    elbo = DisARMELBO(vectorize_pairs=vectorize_pairs)
    est = estimates(elbo, nested_model, nested_guide, GROUPS_DATA, 100)
    z = z_scores(est, exact)
    assert z.abs().max() < Z_THRESHOLD, z


@pytest.mark.parametrize("vectorize_pairs", [False, True], ids=["loop", "vectorized"])
def test_joint_pair_refuses_a_dependent_guide(vectorize_pairs):
    elbo = DisARMELBO(coupling="joint", vectorize_pairs=vectorize_pairs)
    with pytest.raises(DVAEInputError, match="coupling='sequential'") as info:
        elbo.loss(user_model, user_guide, USER_DATA)
    assert "\n" not in str(info.value)


def test_variance_below_reinforce_with_the_same_evaluations():
    """Guide-gradient variance with two model evaluations per step. Measured total variance
    over seeds 0-2: DisARM 2750-3190, RLOO with 2 samples 3790-4290, REINFORCE averaged over 2
    samples 9780-12640 (DisARM / REINFORCE 0.24-0.31)."""

    def guide_variance(elbo):
        est = estimates(elbo, bernoulli_model, bernoulli_guide, BERNOULLI_DATA, NUM_CALLS)
        return est[:, :GUIDE_COORDS].var(0).sum()

    disarm = guide_variance(DisARMELBO())
    rloo = guide_variance(RLOOELBO(2))
    plain = guide_variance(ScoreFunctionELBO(num_particles=2))
    assert disarm < 0.5 * plain
    assert rloo < plain


@pytest.mark.parametrize("vectorize_pairs", [False, True], ids=["loop", "vectorized"])
def test_discrete_vae_with_bernoulli_latents_trains(vectorize_pairs):
    vae = DiscreteVAE(6, "5b", encoder_hidden=(8,))
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    elbo = DisARMELBO(2, vectorize_pairs=vectorize_pairs)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    losses = [svi.step(x) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert vae.encoder[0].weight.grad is not None


def test_discrete_vae_with_categorical_latents_trains():
    """Through the registry, which vectorizes the pairs."""
    vae = DiscreteVAE(6, "3x4", encoder_hidden=(8,))
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    elbo = build_elbo("disarm", num_particles=2)
    assert elbo.vectorize_pairs
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    losses = [svi.step(x) for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    elbo.loss_and_grads(vae.model, vae.guide, x)  # (svi.step zeroed the gradients)
    assert vae.encoder[0].weight.grad.abs().sum() > 0


def test_bad_options():
    with pytest.raises(DVAEInputError, match="coupling must be one of"):
        DisARMELBO(coupling="pairs")
    with pytest.raises(DVAEInputError, match="num_particles"):
        DisARMELBO(num_particles=0)
    with pytest.raises(DVAEInputError, match="categorical must be one of"):
        DisARMELBO(categorical="tree")
