"""Tests for ScoreFunctionELBO: unbiased against the exact gradient, baselines reduce variance.

The tiny model has one 3-class latent per datum and scalar Gaussian data; the data are three
distinct values repeated, so one call sums hundreds of independent per-datum estimates. The exact
gradient is that of EnumeratedELBO (the discrete ELBO summed over every configuration).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from _models import mixture_guide, mixture_model
from pyro.infer import SVI

from pyro_dvae.diagnostics import exact_gradient, gradient_estimates
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer.enumerated_elbo import EnumeratedELBO
from pyro_dvae.infer.score_function_elbo import BaselineMessenger, ScoreFunctionELBO

# two-sided z threshold per coordinate: P(|t_24| > 4.5) ~ 1.5e-4, so with 12 coordinates the
# family-wise false-alarm rate of an unbiased estimator is below 0.2% (Bonferroni). Measured
# max |z|: 1.4-1.8 for the three baselines; ~40 for a relaxed (biased) estimator.
Z_THRESHOLD = 4.5
NUM_CALLS = 25
DATA = torch.tensor([-1.0, 0.5, 2.0]).repeat(100)


model, guide = mixture_model, mixture_guide


GROUPS = {"prior_logits": "model", "locs": "model", "enc_w": "guide", "enc_b": "guide"}


def _flat_exact():
    exact = exact_gradient(model, guide, DATA)
    return {
        "model": torch.cat([exact["prior_logits"], exact["locs"]]),
        "guide": torch.cat([exact["enc_w"], exact["enc_b"]]),
    }


class OracleBaseline(torch.nn.Module):
    """b(x) = the exact per-datum ELBO: the expected downstream cost, a near-ideal baseline."""

    def __init__(self, x: torch.Tensor) -> None:
        super().__init__()
        self.values = EnumeratedELBO().per_datum(model, guide, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.values


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("baseline", ["none", "decaying_average", "neural"])
def test_mean_gradient_matches_exact(baseline):
    elbo = ScoreFunctionELBO(baseline=baseline, baseline_hidden=(8,))
    est = gradient_estimates(elbo, model, guide, DATA, num_samples=NUM_CALLS, groups=GROUPS)
    exact = _flat_exact()
    for group, samples in est.items():
        assert samples.shape == (NUM_CALLS, 6)
        se = samples.std(0) / NUM_CALLS**0.5
        z = (samples.mean(0) - exact[group]) / se
        assert z.abs().max() < Z_THRESHOLD, (group, z)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_baselines_reduce_variance():
    def guide_variance(elbo):
        est = gradient_estimates(elbo, model, guide, DATA, num_samples=25, groups=GROUPS)
        return est["guide"].var(0).sum()

    plain = guide_variance(ScoreFunctionELBO(baseline="none"))
    average = ScoreFunctionELBO(baseline="decaying_average", baseline_beta=0.5)
    for _ in range(10):  # settle the average: every estimate starts from the state left here
        average.loss_and_grads(model, guide, DATA)
    average = guide_variance(average)
    oracle = guide_variance(ScoreFunctionELBO(baseline="neural", baseline_net=OracleBaseline(DATA)))
    # measured ratios over seeds 0-5: 0.10-0.17 (average) and 0.09-0.12 (oracle); bounds leave room
    # for the noise of a variance estimated from 25 draws
    assert average < 0.6 * plain
    assert oracle < 0.3 * plain


def test_model_gradient_unaffected_by_baseline():
    """Baselines only touch score-function terms: the model's gradient is the same draw's."""
    out = {}
    for baseline in ("none", "decaying_average"):
        pyro.set_rng_seed(1)
        est = gradient_estimates(
            ScoreFunctionELBO(baseline=baseline), model, guide, DATA, 1, groups=GROUPS
        )
        out[baseline] = est["model"]
    assert torch.allclose(out["none"], out["decaying_average"])


def test_neural_baseline_is_registered_and_trained():
    elbo = ScoreFunctionELBO(baseline="neural", baseline_hidden=(4,), baseline_name="nvil_b")
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), elbo)
    svi.step(DATA[:30])
    names = [n for n in pyro.get_param_store().keys() if n.startswith("nvil_b$$$")]
    assert len(names) == 4
    before = {n: pyro.param(n).detach().clone() for n in names}
    svi.step(DATA[:30])
    assert all(not torch.equal(before[n], pyro.param(n)) for n in names)


def test_decaying_average_survives_batch_size_change():
    elbo = ScoreFunctionELBO(baseline="decaying_average", baseline_average="position")
    elbo.loss_and_grads(model, guide, DATA)
    elbo.loss_and_grads(model, guide, DATA[:7])  # Pyro's per-position average is reset
    assert pyro.param("__baseline_avg_downstream_cost_z").shape == (7,)
    elbo = ScoreFunctionELBO(baseline="decaying_average")  # per site: one scalar, any batch
    for batch in (DATA, DATA[:7], DATA):
        elbo.loss_and_grads(model, guide, batch)
        assert pyro.param("__baseline_avg_downstream_cost_z").shape == ()


def _coin_problem(draws: list):
    """z_n ~ Bernoulli(0.3), x_n ~ Normal(2 z_n, 1); q(z_n) = Bernoulli(sigmoid(l)). The guide
    keeps its draws, so a test can write each datum's downstream cost by hand."""

    def coin_model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.3))
            pyro.sample("x", dist.Normal(2.0 * z, 1.0), obs=x)

    def coin_guide(x):
        logit = pyro.param("l", torch.tensor(0.2))
        with pyro.plate("data", len(x)):
            draws.append(pyro.sample("z", dist.Bernoulli(logits=logit)).detach().clone())

    def cost(x, z, logit):  # log p(z) + log p(x | z) - log q(z), per datum
        return (
            dist.Bernoulli(0.3).log_prob(z)
            + dist.Normal(2.0 * z, 1.0).log_prob(x)
            - dist.Bernoulli(logits=logit).log_prob(z)
        )

    return coin_model, coin_guide, cost


def test_site_average_is_a_hand_computed_decaying_average():
    """The default average: one scalar per site, started at the first batch's mean cost (no
    baseline on that step), then avg <- beta avg + (1 - beta) mean(cost), whatever the batch
    size; each step's gradient uses the average of the steps before it. Pyro's per-position
    average (the old default) starts at zero and keeps one value per position: it fails here."""
    draws: list = []
    coin_model, coin_guide, cost = _coin_problem(draws)
    pyro.set_rng_seed(3)
    x = torch.randn(6)
    beta = 0.7
    elbo = ScoreFunctionELBO(baseline="decaying_average", baseline_beta=beta)
    assert elbo.baseline_average == "site"
    average = None
    for batch in (x, x[:4], x, x[2:5]):
        elbo.loss_and_grads(coin_model, coin_guide, batch)
        param = pyro.param("l").unconstrained()
        logit, z = pyro.param("l").detach(), draws[-1]
        c = cost(batch, z, logit)
        b = 0.0 if average is None else average
        # d(loss)/dl of the surrogate: -sum_n (c_n - b) d log q(z_n) / dl
        expected_grad = -((c - b) * (z - torch.sigmoid(logit))).sum()
        assert torch.allclose(param.grad, expected_grad, atol=1e-5)
        param.grad = None
        average = c.mean() if average is None else beta * average + (1 - beta) * c.mean()
        stored = pyro.param("__baseline_avg_downstream_cost_z")
        assert stored.shape == () and torch.allclose(stored, average, atol=1e-5)


def test_site_average_with_particles():
    """Sequential particles update the average once each; vectorized ones average together."""
    draws: list = []
    coin_model, coin_guide, cost = _coin_problem(draws)
    x = torch.randn(5)
    elbo = ScoreFunctionELBO(baseline="decaying_average", baseline_beta=0.5, num_particles=2)
    elbo.loss_and_grads(coin_model, coin_guide, x)
    logit = pyro.param("l").detach()
    first, second = (cost(x, z, logit).mean() for z in draws)
    expected = 0.5 * first + 0.5 * second
    assert torch.allclose(pyro.param("__baseline_avg_downstream_cost_z"), expected, atol=1e-5)
    pyro.clear_param_store()
    draws.clear()
    elbo = ScoreFunctionELBO(
        baseline="decaying_average", num_particles=3, vectorize_particles=True, max_plate_nesting=1
    )
    elbo.loss_and_grads(coin_model, coin_guide, x)
    logit = pyro.param("l").detach()
    expected = cost(x, draws[0], logit).mean()  # [3, 5] costs: the first average is their mean
    stored = pyro.param("__baseline_avg_downstream_cost_z")
    assert stored.shape == () and torch.allclose(stored, expected, atol=1e-5)


def test_position_average_is_pyros():
    """``baseline_average="position"`` is Pyro's own average: per position, from zero."""
    draws: list = []
    coin_model, coin_guide, cost = _coin_problem(draws)
    x = torch.randn(5)
    elbo = ScoreFunctionELBO(baseline="decaying_average", baseline_average="position")
    elbo.loss_and_grads(coin_model, coin_guide, x)
    c = cost(x, draws[0], pyro.param("l").detach())
    assert torch.allclose(pyro.param("__baseline_avg_downstream_cost_z"), 0.1 * c, atol=1e-5)


def test_default_average_is_per_site():
    """The per-site average is the default (the measurement: benchmarks/RESULTS.md)."""
    from pyro_dvae.infer import build_elbo

    assert ScoreFunctionELBO().baseline_average == "site"
    assert build_elbo("score-function-baseline").baseline_average == "site"


def test_messenger_respects_user_baselines_and_skips_observed_sites():
    def user_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("a", dist.Bernoulli(0.5), infer={"baseline": {"baseline_value": x}})
            pyro.sample("b", dist.Bernoulli(0.5))
            pyro.sample("c", dist.Normal(0.0, 1.0))
            pyro.sample("d", dist.Bernoulli(0.5), obs=torch.ones(len(x)))

    with BaselineMessenger({"use_decaying_avg_baseline": True}):
        tr = pyro.poutine.trace(user_guide).get_trace(torch.zeros(2))
    assert set(tr.nodes["a"]["infer"]["baseline"]) == {"baseline_value"}
    assert tr.nodes["b"]["infer"]["baseline"] == {"use_decaying_avg_baseline": True}
    assert "baseline" not in tr.nodes["c"]["infer"]  # reparameterized
    assert "baseline" not in tr.nodes["d"]["infer"]  # observed


def test_bad_options():
    with pytest.raises(DVAEInputError, match="baseline must be one of"):
        ScoreFunctionELBO(baseline="mean")
    with pytest.raises(DVAEInputError, match="baseline_average must be one of"):
        ScoreFunctionELBO(baseline="decaying_average", baseline_average="batch")
    with pytest.raises(DVAEInputError, match="first positional argument"):
        ScoreFunctionELBO(baseline="neural").loss_and_grads(model, guide, x=DATA)


def test_differentiable_loss_matches_loss_and_grads():
    """The surrogate form gives the same value and the same gradient as loss_and_grads."""
    import pyro.distributions as dist

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.4))
            pyro.sample("x", dist.Normal(2.0 * z, 1.0), obs=x)

    def guide(x):
        w = pyro.param("w", torch.tensor(0.3))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(logits=w * x))

    x = torch.tensor([0.5, 1.5, -1.0, 2.5])
    results = []
    for use_differentiable in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(3)
        elbo = ScoreFunctionELBO(baseline="none")
        if use_differentiable:
            loss_t = elbo.differentiable_loss(model, guide, x)
            loss_t.backward()
            loss = float(loss_t.detach())
        else:
            loss = elbo.loss_and_grads(model, guide, x)
        w = pyro.param("w").unconstrained()
        results.append((loss, w.grad.clone()))
    assert abs(results[0][0] - results[1][0]) < 1e-5
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-6)
    assert float(results[0][1].abs()) > 0
