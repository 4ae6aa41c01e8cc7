"""Tests for the gradient diagnostics: exact gradient, estimates, bias/variance summaries."""

from __future__ import annotations

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F

from pyro_dvae import DiscreteVAE
from pyro_dvae.diagnostics import (
    compare_gradients,
    default_group,
    exact_gradient,
    gradient_diagnostics,
    gradient_estimates,
)
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer.gumbel_softmax_elbo import GumbelSoftmaxELBO
from pyro_dvae.infer.score_function_elbo import ScoreFunctionELBO

LOCS = torch.tensor([-1.0, 0.5, 1.5])


def brute_force_elbo(vae: DiscreteVAE, x: torch.Tensor) -> torch.Tensor:
    """sum_n sum_z q(z|x_n) [log p(z) + log p(x_n|z) - log q(z|x_n)], written out by hand."""
    groups, k = vae.latent.groups, vae.latent.categories
    log_q_table = vae.encoder(x).reshape(len(x), groups, k).log_softmax(-1)  # [B, N, K]
    log_prior = vae.prior_logits.log_softmax(-1)  # [N, K]
    total = 0.0
    for idx in itertools.product(range(k), repeat=groups):
        z = F.one_hot(torch.tensor(idx), k).float()  # [N, K]
        log_q = log_q_table[:, torch.arange(groups), torch.tensor(idx)].sum(-1)  # [B]
        log_pz = log_prior[torch.arange(groups), torch.tensor(idx)].sum()
        logits = vae.decoder(z.reshape(-1))
        log_px = -F.binary_cross_entropy_with_logits(logits.expand_as(x), x, reduction="none").sum(
            -1
        )
        total = total + (log_q.exp() * (log_pz + log_px - log_q)).sum()
    return total


def test_exact_gradient_matches_brute_force():
    vae = DiscreteVAE(3, "2x3", encoder_hidden=(4,), prior="learned")
    with torch.no_grad():
        vae.prior_logits.copy_(torch.tensor([[0.5, 0.0, -0.5], [0.2, -0.1, 0.3]]))
    x = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    got = exact_gradient(vae.model, vae.guide, x, params=vae)
    names = [n for n, _ in vae.named_parameters()]
    want = torch.autograd.grad(-brute_force_elbo(vae, x), list(vae.parameters()))
    assert sorted(got) == sorted(names)
    for name, w in zip(names, want):
        assert torch.allclose(got[name], w, atol=1e-5, rtol=1e-4), name
    assert all(p.grad is None for p in vae.parameters())  # no side effect on .grad


def test_param_selection_and_default_groups():
    vae = DiscreteVAE(3, "1x2", encoder_hidden=(2,), prior="learned")
    x = torch.ones(2, 3)
    by_pyro_name = exact_gradient(vae.model, vae.guide, x)
    assert "discrete_vae$$$encoder.0.weight" in by_pyro_name
    chosen = exact_gradient(vae.model, vae.guide, x, params=["prior_logits"])
    assert list(chosen) == ["prior_logits"]
    assert torch.equal(chosen["prior_logits"], by_pyro_name["discrete_vae$$$prior_logits"])
    est = gradient_estimates(GumbelSoftmaxELBO(0.5), vae.model, vae.guide, x, num_samples=2)
    sizes = {
        g: sum(p.numel() for n, p in vae.named_parameters() if default_group(n) == g)
        for g in ("encoder", "decoder")
    }
    assert {g: v.shape for g, v in est.items()} == {g: (2, s) for g, s in sizes.items()}
    assert default_group("q", in_guide=True, in_model=False) == "encoder"
    assert default_group("scale", in_guide=True, in_model=True) == "decoder"
    with pytest.raises(DVAEInputError, match="was not found"):
        exact_gradient(vae.model, vae.guide, x, params=["nope"])


def test_compare_gradients_values():
    est = {"g": torch.tensor([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]])}
    d = compare_gradients(est, {"g": torch.tensor([2.0, 2.0])})["g"]
    assert d.bias == pytest.approx(1.0)  # mean (2, 3)
    assert d.variance == pytest.approx(1.0 + 3.0)
    assert d.bias_se == pytest.approx(math.sqrt(4.0 / 3))
    assert d.mse == pytest.approx((1 + 1 + 9) / 3)
    assert d.cosine == pytest.approx(10 / (math.sqrt(13) * math.sqrt(8)))


def shared_model(x):
    locs = pyro.param("locs", LOCS)
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
        pyro.sample("x", dist.Normal((z * locs).sum(-1), 1.0), obs=x)


def shared_guide(x):
    q = pyro.param("q_logits", torch.zeros(3))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.OneHotCategorical(logits=q))


def test_gumbel_softmax_bias_decreases_with_temperature():
    """At q = p (uniform) the KL has zero gradient, and the relaxed reconstruction term's
    expectation and gradient converge to the discrete ones as tau -> 0 (Maddison et al. 2017,
    Prop. 1). Measured biases at N=1500 (relative to ||exact||): 0.84, 0.66, 0.41, 0.19."""
    x = torch.tensor([-1.0, 0.5, 2.0]).repeat(500)
    temperatures = [2.0, 1.0, 0.5, 0.25]
    out = gradient_diagnostics(
        GumbelSoftmaxELBO(kl="analytic"),
        shared_model,
        shared_guide,
        x,
        num_samples=5,
        temperatures=temperatures,
    )
    assert list(out) == temperatures
    for group in ("encoder", "decoder"):
        diags = [out[t][group] for t in temperatures]
        for hot, cold in zip(diags, diags[1:]):
            # each drop is larger than 2 standard errors of the noisier bias
            assert hot.bias - cold.bias > 2 * max(hot.bias_se, cold.bias_se), (group, hot, cold)
        assert diags[-1].cosine > 0.98


def test_score_function_bias_shrinks_like_inverse_sqrt_samples():
    """Unbiased estimator: ||mean of S estimates - exact|| ~ sqrt(tr Cov / S). One run of 64
    estimates is cut into blocks of S = 2, 8, 32; per-datum guide logits give 120 independent
    coordinates, so the norms concentrate (measured slope -0.52)."""

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.OneHotCategorical(logits=torch.zeros(3)))
            pyro.sample("x", dist.Normal((z * LOCS).sum(-1), 1.0), obs=x)

    def guide(x):
        q = pyro.param("table", torch.zeros(len(x), 3))
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.OneHotCategorical(logits=q))

    x = torch.tensor([-1.0, 0.5, 2.0]).repeat(40)
    exact = {"encoder": exact_gradient(model, guide, x)["table"].reshape(-1)}
    est = gradient_estimates(ScoreFunctionELBO(), model, guide, x, num_samples=64)["encoder"]
    bias = {}
    for s in (2, 8, 32):
        diags = [compare_gradients({"encoder": b}, exact)["encoder"] for b in est.split(s)]
        bias[s] = sum(d.bias for d in diags) / len(diags)
        se = sum(d.bias_se for d in diags) / len(diags)
        assert 0.6 < bias[s] / se < 1.4, (s, bias[s], se)
    slope = math.log(bias[32] / bias[2]) / math.log(16)
    assert -0.65 < slope < -0.35, bias


def test_temperatures_need_a_relaxed_estimator():
    x = torch.zeros(3)
    with pytest.raises(DVAEInputError, match="has no temperature"):
        gradient_diagnostics(
            ScoreFunctionELBO(), shared_model, shared_guide, x, 2, temperatures=[1.0]
        )


def _z_scores(estimates: dict[str, torch.Tensor], exact: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-coordinate z = (mean of S estimates - exact) / (SD / sqrt(S)), all groups together."""
    z = []
    for group, samples in estimates.items():
        samples = samples.double()
        se = samples.std(0) / math.sqrt(samples.shape[0])
        z.append((samples.mean(0) - exact[group].double()) / se)
    return torch.cat(z)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_score_function_mean_gradient_passes_z_test_against_exact():
    """Unbiasedness of REINFORCE: over S = 100 estimates (each the mean of 20 vectorized
    particles, 2000 samples in all) every coordinate of the mean gradient (3 guide logits,
    3 decoder locations) is within |z| < 3.97 of the exact gradient: a two-sided test at overall
    level 0.001 (Bonferroni over 6 coordinates). The same test rejects the biased Gumbel-softmax
    estimator at tau = 1 on the same case (power check), so the test can fail.
    Measured: max |z| = 1.6 (score function) and 86 (Gumbel-softmax)."""
    pyro.set_rng_seed(123)
    x = torch.tensor([-1.0, 0.5, 2.0, 1.2])
    pyro.param("q_logits", torch.tensor([0.3, -0.2, 0.1]))
    pyro.param("locs", LOCS)
    exact = exact_gradient(shared_model, shared_guide, x)
    exact = {"encoder": exact["q_logits"], "decoder": exact["locs"]}
    critical = 3.97  # Phi^-1(1 - 0.001 / (2 * 6))
    particles = {"num_particles": 20, "vectorize_particles": True, "max_plate_nesting": 1}
    unbiased = ScoreFunctionELBO(**particles)
    est = gradient_estimates(unbiased, shared_model, shared_guide, x, num_samples=100)
    z = _z_scores(est, exact)
    assert z.numel() == 6
    assert z.abs().max() < critical, z
    relaxed = GumbelSoftmaxELBO(temperature=1.0, kl="analytic", **particles)
    est = gradient_estimates(relaxed, shared_model, shared_guide, x, num_samples=100)
    assert _z_scores(est, exact).abs().max() > critical


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_baselines_reduce_score_function_variance():
    """Far-from-zero, datum-dependent costs (x up to 6 with locations near 0) make plain
    REINFORCE noisy; the decaying averages (warmed up for 40 calls) and a fitted neural baseline
    b(x) (100 Adam steps) cut the trace of the covariance of the guide's gradient (S = 50
    estimates of 10 vectorized particles each). On this one fixed batch Pyro's per-position
    average is a per-datum baseline, as b(x) is; the per-site average removes the mean cost
    only, so it cuts less. Measured variance ratios (every estimate from the warmed-up state):
    0.09 (position), 0.68 (site), 0.07 (neural)."""
    pyro.set_rng_seed(7)
    x = torch.tensor([-1.0, 0.5, 2.0, 6.0, 4.0, -3.0])
    pyro.param("q_logits", torch.tensor([0.3, -0.2, 0.1]))
    pyro.param("locs", LOCS)
    particles = {"num_particles": 10, "vectorize_particles": True, "max_plate_nesting": 1}

    def variance(elbo) -> float:
        est = gradient_estimates(elbo, shared_model, shared_guide, x, num_samples=50)
        zeros = {"encoder": torch.zeros(3), "decoder": torch.zeros(3)}
        return compare_gradients(est, zeros)["encoder"].variance

    def average_variance(kind: str) -> float:
        store = pyro.get_param_store()
        if "__baseline_avg_downstream_cost_z" in store:  # both kinds keep it under this name
            del store["__baseline_avg_downstream_cost_z"]
        average = ScoreFunctionELBO("decaying_average", baseline_average=kind, **particles)
        for _ in range(40):  # let the moving average of the downstream cost settle
            average.loss_and_grads(shared_model, shared_guide, x)
        return variance(average)

    plain = variance(ScoreFunctionELBO(**particles))
    ratios = {kind: average_variance(kind) / plain for kind in ("position", "site")}
    neural = ScoreFunctionELBO(baseline="neural", baseline_hidden=(16,), **particles)
    neural.loss_and_grads(shared_model, shared_guide, x)  # builds the baseline network
    optim = torch.optim.Adam(neural.baseline_net.parameters(), lr=0.05)
    for _ in range(100):  # fit b(x) to the downstream cost (Pyro's baseline loss)
        optim.zero_grad()
        neural.loss_and_grads(shared_model, shared_guide, x)
        optim.step()
    ratios["neural"] = variance(neural) / plain
    assert ratios["position"] < 0.5 and ratios["neural"] < 0.5 and ratios["site"] < 0.9, ratios


@pytest.mark.parametrize("average", ["site", "position"])
def test_every_estimate_starts_from_the_callers_baseline(average):
    """The decaying averages move on every loss_and_grads call; the diagnostic's estimates must
    each see the state the caller (training) left, not one adapted to the previous estimates on
    the same fixed batch, and leave it untouched (the same tensor objects, bitwise)."""
    key = "__baseline_avg_downstream_cost_z"
    x = torch.tensor([-1.0, 0.5, 2.0, 6.0, 4.0, -3.0])
    pyro.param("q_logits", torch.tensor([0.3, -0.2, 0.1]))
    pyro.param("locs", LOCS)
    seen = []

    class Recording(ScoreFunctionELBO):
        def loss_and_grads(self, model, guide, *args, **kwargs):
            seen.append(pyro.get_param_store()[key].detach().clone())
            return super().loss_and_grads(model, guide, *args, **kwargs)

    elbo = Recording("decaying_average", baseline_average=average)
    for data in (x, x.flip(0), x * 2):  # training batches
        ScoreFunctionELBO.loss_and_grads(elbo, shared_model, shared_guide, data)
    store = pyro.get_param_store()
    before = dict(store.named_parameters())
    values = {name: p.detach().clone() for name, p in before.items()}
    gradient_estimates(elbo, shared_model, shared_guide, x, num_samples=5)
    assert len(seen) == 5
    assert all(torch.equal(s, values[key]) for s in seen), seen
    after = dict(store.named_parameters())
    assert after.keys() == before.keys()
    assert all(after[n] is before[n] and torch.equal(after[n], values[n]) for n in before)
    # the same estimates chained (the old behaviour) would have moved the average
    elbo.loss_and_grads(shared_model, shared_guide, x)
    assert not torch.equal(pyro.get_param_store()[key], values[key])


def test_new_param_store_entries_are_removed_after_the_estimates():
    """A state created by the estimates themselves (a site's first average, the neural baseline's
    parameters) does not outlive them: every estimate is a first step, as the caller's would be."""
    x = torch.tensor([-1.0, 0.5, 2.0])
    pyro.param("q_logits", torch.zeros(3))
    pyro.param("locs", LOCS)
    names = set(pyro.get_param_store().keys())
    for baseline in ("decaying_average", "neural"):
        elbo = ScoreFunctionELBO(baseline, baseline_hidden=(4,))
        gradient_estimates(elbo, shared_model, shared_guide, x, num_samples=3)
        assert set(pyro.get_param_store().keys()) == names
