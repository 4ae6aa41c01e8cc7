"""DiscreteVAE: shapes, priors, likelihoods, broadcasting, conveniences, and end-to-end training on
synthetic data from a known model whose exact test log p(x) is the target."""

from __future__ import annotations

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import SVI

from pyro_dvae.data import make_synthetic
from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import (
    EnumeratedELBO,
    ExactMarginalELBO,
    GumbelSoftmaxELBO,
    discrete_elbo,
    exact_log_likelihood,
    iwae_log_likelihood,
)
from pyro_dvae.models import DiscreteVAE

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded


D = 6


def make(latent, **kw):
    torch.manual_seed(0)
    return DiscreteVAE(D, latent, encoder_hidden=(5,), **kw)


# ------------------------------------------------------------------ shapes -------------------
@pytest.mark.parametrize(
    "latent, logit_shape, code_shape", [("3x4", (3, 4), (3, 4)), ("5b", (5,), (5,))]
)
@pytest.mark.parametrize("likelihood", ["bernoulli", "normal"])
def test_shapes(latent, logit_shape, code_shape, likelihood):
    vae = make(latent, likelihood=likelihood)
    x = torch.bernoulli(torch.full((7, D), 0.5))
    assert vae.encode_logits(x).shape == (7, *logit_shape)
    prior = vae.prior()
    assert prior.batch_shape == () and prior.event_shape == code_shape
    z = prior.sample((7,))
    assert vae.decode(z).shape == (7, D)
    lik = vae.likelihood(z)
    assert lik.batch_shape == (7,) and lik.event_shape == (D,)
    # p(x | z) against the hand-written density of the decoder output
    out = vae.decode(z)
    if likelihood == "normal":
        scale = vae.log_scale.exp()
        expected = -0.5 * ((x - out) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
    else:
        expected = x * F.logsigmoid(out) + (1 - x) * F.logsigmoid(-out)
    torch.testing.assert_close(lik.log_prob(x), expected.sum(-1))
    # p(z) against the hand-written prior (uniform: every code has probability K^-N)
    lp = prior.log_prob(z)
    assert lp.shape == (7,)
    torch.testing.assert_close(lp, torch.full((7,), -vae.latent.log2_configurations * math.log(2)))
    # Pyro model and guide sites
    model_tr = poutine.trace(vae.model).get_trace(x)
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    assert model_tr.nodes["z"]["value"].shape == (7, *code_shape)
    assert model_tr.nodes["x"]["is_observed"] and torch.equal(model_tr.nodes["x"]["value"], x)
    assert guide_tr.nodes["z"]["value"].shape == (7, *code_shape)
    assert guide_tr.nodes["z"]["fn"].batch_shape == (7,)
    # conveniences
    mode = vae.posterior_mode(x)
    assert mode.shape == (7, *code_shape)
    logits = vae.encode_logits(x)
    if latent.endswith("b"):
        assert torch.equal(mode, (logits > 0).float())
    else:
        assert torch.equal(mode.argmax(-1), logits.argmax(-1))
        assert torch.equal(mode.sum(-1), torch.ones(7, 3))
    rec = vae.reconstruct(x)
    assert rec.shape == (7, D)
    assert vae.sample_prior(4).shape == (4, *code_shape)
    assert vae.sample_x(4).shape == (4, D)
    if likelihood == "bernoulli":
        assert ((rec > 0) & (rec < 1)).all()


@pytest.mark.parametrize("latent, code_shape", [("3x4", (3, 4)), ("5b", (5,))])
def test_decoder_broadcasts_over_leading_dims(latent, code_shape):
    vae = make(latent)
    z = vae.prior().sample((2, 5, 7))
    out = vae.decode(z)
    assert out.shape == (2, 5, 7, D)
    # identical to decoding each code separately
    flat = torch.stack([vae.decode(zi.unsqueeze(0))[0] for zi in z.reshape(-1, *code_shape)])
    torch.testing.assert_close(out.reshape(-1, D), flat)
    # enumeration-style shape: one code per leading slot, broadcast against a data batch
    lik = vae.likelihood(z[:, :1, :1])  # [2, 1, 1, ...]
    x = torch.bernoulli(torch.full((7, D), 0.5))
    assert lik.log_prob(x).shape == (2, 1, 7)


def test_learned_vs_uniform_prior():
    uni, learned = make("3x4"), make("3x4", prior="learned")
    assert "prior_logits" not in dict(uni.named_parameters())
    assert "prior_logits" in dict(uni.named_buffers())
    assert "prior_logits" in dict(learned.named_parameters())
    torch.testing.assert_close(uni.prior().base_dist.probs, torch.full((3, 4), 0.25))
    # a uniform prior stays uniform under training; it is not a Pyro parameter
    pyro.clear_param_store()
    svi = SVI(uni.model, uni.guide, pyro.optim.Adam({"lr": 0.1}), ExactMarginalELBO())
    svi.step(torch.bernoulli(torch.full((8, D), 0.5)))
    assert torch.equal(uni.prior_logits, torch.zeros(3, 4))
    assert "discrete_vae$$$prior_logits" not in pyro.get_param_store()
    assert "discrete_vae$$$decoder.0.weight" in pyro.get_param_store()


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize(
    "latent, cls, dim", [("4b", "AutoregressiveBernoulli", 4), ("2x3", "AutoregressiveOneHot", 6)]
)
def test_autoregressive_prior_parameters_log_prob_and_kl_per_group(latent, cls, dim):
    vae = make(latent, prior="autoregressive")
    names = dict(vae.named_parameters())
    assert names["prior_weight"].shape == (dim, dim)
    assert names["prior_logits"].shape == vae._logit_shape
    with torch.no_grad():
        vae.prior_weight.normal_()
    p = vae.prior()
    assert type(p).__name__.startswith(cls) and p.event_shape == vae._logit_shape
    codes = p.enumerate_support(expand=False)
    assert abs(float(p.log_prob(codes).exp().sum().detach()) - 1) < 1e-5
    x = torch.bernoulli(torch.full((3, D), 0.5))
    # per-unit terms at one sample: their mean over draws is the exact KL (summed over codes)
    with torch.no_grad():
        q = vae._latent_dist(vae.encode_logits(x))
        log_q = q.log_prob(codes.unsqueeze(1))
        exact = (log_q.exp() * (log_q - p.log_prob(codes).unsqueeze(1))).sum(0)
    draws = torch.stack([vae.kl_per_group(x).sum(-1) for _ in range(4000)])
    assert vae.kl_per_group(x).shape == (3, vae.latent.groups)
    se = draws.std(0) / 4000**0.5
    assert bool(((draws.mean(0) - exact).abs() < 5 * se + 1e-6).all()), (draws.mean(0), exact)
    assert vae.sample_prior(5).shape == (5,) + vae._logit_shape


@pytest.mark.parametrize("latent", ["3x4", "5b"])
def test_kl_per_group_equals_hand_formula_and_finds_a_collapsed_group(latent):
    """sum_k q log(q / p) per group, by hand from the encoder's logits and a random learned
    prior; a group whose encoder output is made constant and equal to the prior has KL 0."""
    vae = make(latent, prior="learned")
    categorical = vae.latent.kind == "categorical"
    with torch.no_grad():
        vae.prior_logits.copy_(torch.randn(vae.prior_logits.shape))
        last = vae.encoder[-1]  # group 0 collapses: q(z_0 | x) = p(z_0) for every x
        k = vae.latent.categories if categorical else 1
        last.weight[:k] = 0.0
        last.bias[:k] = vae.prior_logits.reshape(-1)[:k]
    x = torch.bernoulli(torch.full((9, D), 0.5))
    logits = vae.encode_logits(x)
    if categorical:
        lq, lp = logits.log_softmax(-1), vae.prior_logits.log_softmax(-1)
        expected = (lq.exp() * (lq - lp)).sum(-1)
    else:
        q, p = torch.sigmoid(logits), torch.sigmoid(vae.prior_logits)
        expected = q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()
    got = vae.kl_per_group(x)
    assert got.shape == (9, vae.latent.groups)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert got[:, 0].abs().max() < 1e-6
    assert (got[:, 1:].mean(0) > 1e-3).all()
    # the groups' KLs add up to the ELBO's KL term
    q_full, p_full = vae._latent_dist(logits), vae.prior()
    total = torch.distributions.kl_divergence(q_full, p_full.expand(q_full.batch_shape))
    torch.testing.assert_close(got.sum(-1), total, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "elbo_factory",
    [
        pytest.param(lambda: GumbelSoftmaxELBO(0.5, kl="relaxed"), id="gumbel-relaxed"),
        pytest.param(lambda: GumbelSoftmaxELBO(0.5, kl="analytic"), id="gumbel-analytic"),
        pytest.param(
            lambda: GumbelSoftmaxELBO(0.5, kl="analytic", straight_through=True), id="st-gumbel"
        ),
        pytest.param(EnumeratedELBO, id="enumerate"),
        pytest.param(ExactMarginalELBO, id="exact"),
    ],
)
@pytest.mark.parametrize("latent", ["2x3", "3b"])
def test_learned_prior_logits_receive_gradients_through_svi(elbo_factory, latent):
    pyro.clear_param_store()
    vae = make(latent, prior="learned")
    x = torch.bernoulli(torch.full((8, D), 0.5))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.1}), elbo_factory())
    before = vae.prior_logits.detach().clone()
    enc_before = vae.encoder[0].weight.detach().clone()
    pyro.set_rng_seed(0)
    svi.step(x)
    # Adam moves every parameter with a non-zero gradient by ~lr on its first step
    assert (vae.prior_logits.detach() - before).abs().max() > 0.05
    assert "discrete_vae$$$prior_logits" in pyro.get_param_store()
    assert (vae.encoder[0].weight.detach() - enc_before).abs().max() > 0  # the guide trains too


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(data_dim=0, latent="2x3"), "data_dim"),
        (dict(data_dim=4, latent="2x3", prior="gaussian"), "prior"),
        (dict(data_dim=4, latent="2x3", likelihood="poisson"), "likelihood"),
        (dict(data_dim=4, latent="2x3", encoder_hidden=(0,)), "hidden"),
        (dict(data_dim=4, latent="2y3"), "cannot parse"),
        (dict(data_dim=4, latent="2x3", dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(data_dim=4, latent="2x3", encoder_noise=-0.1), r"encoder_noise must be in"),
        (dict(data_dim=4, latent="2x3", encoder_noise=0.1, likelihood="normal"), "bernoulli"),
    ],
)
def test_invalid_arguments(kwargs, fragment):
    with pytest.raises(DVAEInputError, match=fragment):
        DiscreteVAE(**kwargs)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_evaluation_bounds_are_consistent_with_exact_log_likelihood():
    """On a DiscreteVAE: exact ELBO <= exact log p(x), IWAE(k=20000) ~= exact log p(x)."""
    torch.manual_seed(3)
    vae = DiscreteVAE(D, "2x3", encoder_hidden=(5,), prior="learned").double()
    with torch.no_grad():
        for p in vae.parameters():  # small weights: a diffuse guide, well-behaved weights
            p.copy_(0.4 * torch.randn_like(p))
    x = torch.bernoulli(torch.full((5, D), 0.5, dtype=torch.float64))
    exact = exact_log_likelihood(vae.model, x)
    pyro.set_rng_seed(4)
    iwae = iwae_log_likelihood(vae.model, vae.guide, x, num_samples=20000, particles_per_batch=5000)
    elbo = EnumeratedELBO().per_datum(vae.model, vae.guide, x)
    # exact ELBO below exact log p(x). IWAE: chi-square(p(z|x) || q) <= 1.7 for these data, so
    # the sd of log-IWAE at k = 20000 is <= sqrt(1.7 / 20000) = 0.009; allow 0.05 (5.5 sd)
    assert (elbo <= exact + 1e-9).all()
    assert (iwae - exact).abs().max() < 0.05, (iwae, exact)
    pyro.set_rng_seed(5)
    mc = discrete_elbo(vae.model, vae.guide, x, num_samples=300)
    # discrete_elbo averages 300 single-sample estimates: within 0.5 nats of the exact ELBO
    assert (mc - elbo).abs().max() < 0.5, (mc, elbo)


# ------------------------------------------------------------------ training -----------------
@pytest.fixture(scope="module")
def synthetic():
    ds = make_synthetic(num_train=2000, num_valid=10, num_test=500, seed=0)
    true_ll = float(ds.true_model.log_likelihood(ds.test).mean())
    assert true_ll == pytest.approx(ds.true_test_log_likelihood)
    return ds, true_ll


def _fresh_vae(seed):
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    # linear decoder: the true model (2 groups x 4 classes, linear Bernoulli decoder, non-uniform
    # prior) is exactly representable, up to relabeling
    return DiscreteVAE(16, "2x4", encoder_hidden=(32,), decoder_hidden=(), prior="learned")


def _test_ll(vae, ds):
    return float(exact_log_likelihood(vae.model, ds.test).mean())


# margins in nats/datum below the true model's mean test log p(x) (-6.35 here). An untrained
# model is ~5 nats below; maximum likelihood reaches ~0.1 (measured 0.08-0.17 over seeds); the
# biased Gumbel-softmax estimator (analytic KL, tau = 0.5) reaches ~0.1-0.3.
EXACT_MARGIN = 0.3
GUMBEL_MARGIN = 0.5


def test_untrained_model_is_far_from_truth(synthetic):
    ds, true_ll = synthetic
    vae = _fresh_vae(0)
    assert true_ll - _test_ll(vae, ds) > 3.0  # so the margins below are informative


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_training_exact_marginal_reaches_true_log_likelihood(synthetic):
    ds, true_ll = synthetic
    vae = _fresh_vae(0)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.08}), ExactMarginalELBO())
    for _ in range(200):  # full batch, 16 configurations
        loss = svi.step(ds.train)
        assert math.isfinite(loss)
    gap = true_ll - _test_ll(vae, ds)
    assert gap < EXACT_MARGIN, gap
    assert gap > -0.1  # cannot beat the true model by more than noise on 500 test points


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_training_gumbel_softmax_reaches_true_log_likelihood(synthetic):
    ds, true_ll = synthetic
    vae = _fresh_vae(0)
    elbo = GumbelSoftmaxELBO(0.5, kl="analytic", max_plate_nesting=1)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.02}), elbo)
    g = torch.Generator().manual_seed(0)
    for _ in range(500):  # minibatches of 200
        loss = svi.step(ds.train[torch.randint(0, ds.num_train, (200,), generator=g)])
        assert math.isfinite(loss)
    gap = true_ll - _test_ll(vae, ds)
    assert gap < GUMBEL_MARGIN, gap


def _guide_logits(vae: DiscreteVAE, x: torch.Tensor) -> torch.Tensor:
    trace = poutine.trace(vae.guide).get_trace(x)
    return trace.nodes["z"]["fn"].base_dist.logits


def test_encoder_noise_flips_the_encoders_input_in_training_only():
    torch.manual_seed(0)
    vae = DiscreteVAE(400, "3x4", encoder_hidden=(8,), encoder_noise=0.1)
    x = torch.bernoulli(torch.full((50, 400), 0.3))
    seen = []
    vae.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    _guide_logits(vae, x)  # train mode (the default)
    flipped = float((seen[-1] != x).float().mean())
    # 20000 pixels, each flipped with p = 0.1: sd 0.0021, so +-0.01 is ~5 sd
    assert abs(flipped - 0.1) < 0.01
    assert set(seen[-1].unique().tolist()) <= {0.0, 1.0}
    model_trace = poutine.trace(vae.model).get_trace(x)
    assert torch.equal(model_trace.nodes["x"]["value"], x)  # the decoder scores the clean x
    vae.eval()
    clean = vae._latent_dist(vae.encode_logits(x)).base_dist.logits  # normalized like the guide's
    assert torch.equal(_guide_logits(vae, x), clean)
    assert torch.equal(seen[-2], x)


def test_dropout_is_active_in_training_and_off_in_eval():
    torch.manual_seed(0)
    vae = DiscreteVAE(20, "20b", encoder_hidden=(64, 32), dropout=0.5)
    assert sum(isinstance(m, torch.nn.Dropout) for m in vae.modules()) == 4  # 2 + 2 hidden
    x = torch.bernoulli(torch.full((10, 20), 0.5))
    assert not torch.equal(_guide_logits(vae, x), _guide_logits(vae, x))
    vae.eval()
    plain = x  # eval mode: the same network with the dropout layers skipped
    for layer in vae.encoder:
        if not isinstance(layer, torch.nn.Dropout):
            plain = layer(plain)
    assert torch.allclose(_guide_logits(vae, x), plain.reshape(10, 20))
    z = torch.bernoulli(torch.full((10, 20), 0.5))
    assert torch.equal(vae.likelihood(z).logits, vae.decode(z))
