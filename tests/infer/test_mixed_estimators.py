"""Every estimator on a model that mixes a discrete and a continuous latent, against ground truth.

The model is a linear-Gaussian mixture VAE written in plain Pyro syntax, so that its marginal
likelihood has a closed form: y ~ Cat(softmax(pi)) (3 classes), z | y ~ Normal(mu_y, 1),
x | z ~ Normal(W z + b, s^2 I_4), hence p(x | y) = Normal(W mu_y + b, W W^T + s^2 I). The guide
is q(y | x) q(z | x, y) with linear encoders, a family that holds the exact posterior (then every
ELBO equals log p(x) at every draw). References:

* the closed-form log p(x) (independent of the code under test);
* :class:`~pyro_dvae.infer.EnumeratedELBO`, whose expectation over y is exact and which equals
  Pyro's ``TraceEnum_ELBO`` (tests/infer/test_mixed_latents.py), for the Monte Carlo estimators'
  mean value and mean gradient (z-tests at 5 standard errors: with R draws each, both sides are
  unbiased for the same ELBO and its gradient);
* Pyro's ``Trace_ELBO`` at equal seeds for labelled batches (y observed, no discrete latent left).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_dvae.infer import (
    DisARMELBO,
    EnumeratedELBO,
    build_elbo,
    discrete_elbo,
    iwae_log_likelihood,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

F64 = torch.float64
K, DZ, DX, N = 3, 1, 4, 5
NOISE = 0.7
Z_MAX = 5.0  # z-test threshold (standard errors)


def make_params(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=g, dtype=F64)

    return {
        "pi": r(K, scale=0.5),
        "mu": r(K, DZ, scale=2.0),
        "W": r(DX, DZ),
        "b": r(DX, scale=0.3),
        "A": r(K, DX, scale=0.8),
        "c": r(K, scale=0.3),
        "B": r(DZ, DX + K, scale=0.5),
        "log_sd": r(DZ, scale=0.2) - 0.5,
        "x": r(N, DX, scale=2.0),
    }


def load(p: dict) -> None:
    pyro.clear_param_store()
    for name, value in p.items():
        if name != "x":
            pyro.param(name, value.clone())


def model(x, y=None):
    pi, mu, W, b = (pyro.param(n) for n in ("pi", "mu", "W", "b"))
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.OneHotCategorical(logits=pi), obs=y)
        z = pyro.sample("z", dist.Normal(y @ mu, 1.0).to_event(1))
        pyro.sample("x", dist.Normal(z @ W.T + b, NOISE).to_event(1), obs=x)


def guide(x, y=None):
    A, c, B, log_sd = (pyro.param(n) for n in ("A", "c", "B", "log_sd"))
    with pyro.plate("data", x.shape[0]):
        if y is None:
            y = pyro.sample("y", dist.OneHotCategorical(logits=x @ A.T + c))
        batch = torch.broadcast_shapes(x.shape[:-1], y.shape[:-1])
        xy = torch.cat([x.expand(batch + x.shape[-1:]), y.expand(batch + y.shape[-1:])], -1)
        pyro.sample("z", dist.Normal(xy @ B.T, log_sd.exp()).to_event(1))


def closed_form_log_px(p: dict) -> torch.Tensor:
    """log p(x_n) = logsumexp_y [log p(y) + log N(x_n; W mu_y + b, W W^T + s^2 I)]."""
    cov = p["W"] @ p["W"].T + NOISE**2 * torch.eye(DX, dtype=F64)
    means = p["mu"] @ p["W"].T + p["b"]  # [K, DX]
    log_lik = torch.distributions.MultivariateNormal(means, cov).log_prob(p["x"].unsqueeze(1))
    return (torch.log_softmax(p["pi"], -1) + log_lik).logsumexp(-1)


def grads(names=("A", "c", "B", "log_sd", "mu", "W")) -> torch.Tensor:
    store = pyro.get_param_store()
    return torch.cat([store.get_param(n).unconstrained().grad.reshape(-1) for n in names])


def draws(elbo, num: int, seed: int, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` independent (loss, gradient) draws of an estimator from the same parameters."""
    p = make_params()
    losses, gradients = [], []
    pyro.set_rng_seed(seed)
    for _ in range(num):
        load(p)
        losses.append(elbo.loss_and_grads(model, guide, p["x"], *args))
        gradients.append(grads())
    return torch.tensor(losses, dtype=F64), torch.stack(gradients)


def z_scores(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two-sample z-scores of the means of ``a`` and ``b`` (draws along dim 0)."""
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt().clamp_min(1e-12)
    return (a.mean(0) - b.mean(0)) / se


@pytest.fixture(scope="module")
def enumerated():
    """200 draws of the exact-over-y ELBO (z sampled): the reference mean value and gradient."""
    pyro.enable_validation(True)
    return draws(EnumeratedELBO(), 200, seed=123)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_enumerated_elbo_is_a_bound_on_the_closed_form_likelihood(enumerated):
    losses, _ = enumerated
    log_px = float(closed_form_log_px(make_params()).sum())
    assert -losses.mean() < log_px


HARD_FORWARD = ["st-gumbel", "gumbel-rao", "reinmax", "score-function"]


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("name", HARD_FORWARD)
def test_hard_sample_estimators_value_is_unbiased(name, enumerated):
    """Estimators whose forward pass draws a hard y: their mean loss is the exact -ELBO."""
    ref, _ = enumerated
    losses, _ = draws(build_elbo(name, kl="analytic", max_plate_nesting=1), 150, seed=7)
    assert abs(float(z_scores(losses, ref))) < Z_MAX


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("name", ["score-function", "score-function-baseline", "nvil"])
def test_score_function_gradients_are_unbiased(name, enumerated):
    """The score-function family is unbiased for the gradient too, the encoder's included
    (dropping the score term would leave q(y|x)'s gradient at zero: |z| >> 5)."""
    _, ref = enumerated
    _, got = draws(build_elbo(name, max_plate_nesting=1), 200, seed=11)
    z = z_scores(got, ref)
    assert z.abs().max() < Z_MAX, z
    assert (ref.mean(0)[: K * DX].abs() / (ref.std(0)[: K * DX] / 20)).max() > Z_MAX  # not vacuous


@pytest.mark.slow  # seconds of sampling: make test-fast skips it
@pytest.mark.parametrize("vectorize_pairs", [False, True], ids=["loop", "vectorized"])
def test_disarm_gradients_are_unbiased(vectorize_pairs, enumerated):
    """Stick-breaking DisARM on y, with q(z | x, y) reading y: 'auto' forms one joint pair
    (each member draws its own z), in one vectorized run or two; the encoder of y included."""
    _, ref = enumerated
    elbo = DisARMELBO(max_plate_nesting=1, vectorize_pairs=vectorize_pairs)
    _, got = draws(elbo, 200, seed=11)
    assert list(elbo._auto.values()) == ["joint"]
    z = z_scores(got, ref)
    assert z.abs().max() < Z_MAX, z


ALL = [
    ("gumbel-softmax", {"kl": "relaxed"}),
    ("gumbel-softmax", {"kl": "analytic"}),
    ("st-gumbel", {"kl": "analytic"}),
    ("gumbel-rao", {"kl": "analytic"}),
    ("reinmax", {"kl": "analytic"}),
    ("score-function", {}),
    ("score-function-baseline", {}),
    ("nvil", {}),
    ("enumerate", {}),
    ("exact", {}),
]


@pytest.mark.parametrize("name, options", ALL)
def test_labelled_batches_equal_trace_elbo(name, options):
    """y observed (``obs=y``, the guide skips it): no discrete latent is left, and every
    estimator is Pyro's Trace_ELBO on the same draw of z."""
    p = make_params(1)
    y = torch.eye(K, dtype=F64)[torch.tensor([0, 2, 1, 1, 0])]
    load(p)
    pyro.set_rng_seed(5)
    expected = Trace_ELBO().loss_and_grads(model, guide, p["x"], y)
    expected_grads = grads(("B", "log_sd", "mu", "W", "pi"))
    elbo = build_elbo(name, max_plate_nesting=1, **options)
    elbo.loss(model, guide, p["x"], y)  # builds NVIL's baseline net (its init draws numbers)
    load(p)
    pyro.set_rng_seed(5)
    got = elbo.loss_and_grads(model, guide, p["x"], y)
    assert got == pytest.approx(expected, rel=1e-9)
    torch.testing.assert_close(grads(("B", "log_sd", "mu", "W", "pi")), expected_grads)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_vimco_on_mixed_model_is_an_importance_weighted_bound():
    """VIMCO's objective is the k-sample bound: its mean lies between the ELBO and log p(x)."""
    losses, _ = draws(build_elbo("vimco", num_particles=8, max_plate_nesting=1), 200, seed=3)
    log_px = float(closed_form_log_px(make_params()).sum())
    enumerated_loss, _ = draws(EnumeratedELBO(), 200, seed=4)
    se = float((losses.var() / len(losses)).sqrt())
    assert -losses.mean() < log_px + Z_MAX * se
    assert -losses.mean() > -enumerated_loss.mean()


def posterior_params(p: dict) -> dict:
    """Guide parameters that make q(y | x) q(z | x, y) the exact posterior (written out)."""
    W, b, mu, s2 = p["W"], p["b"], p["mu"], NOISE**2
    cov = W @ W.T + s2 * torch.eye(DX, dtype=F64)
    means = mu @ W.T + b  # [K, DX]: E[x | y]
    prec_means = torch.linalg.solve(cov, means.T).T  # C^-1 (W mu_k + b)
    c = torch.log_softmax(p["pi"], -1) - 0.5 * (means * prec_means).sum(-1)
    v = 1.0 / (1.0 + (W * W).sum() / s2)  # posterior variance of z given x, y
    B = torch.cat([v * W.T / s2, (v * (mu.T - (W.T @ b) / s2))], -1)  # [1, DX + K]
    return dict(p, A=prec_means, c=c, B=B, log_sd=0.5 * torch.log(v).reshape(1))


def test_exact_posterior_guide_makes_every_bound_equal_log_px():
    """With q the exact posterior, log p(x, y, z) - log q(y, z | x) = log p(x) at every draw:
    the enumerated ELBO and the importance-weighted bound equal the closed form."""
    p = posterior_params(make_params())
    load(p)
    log_px = closed_form_log_px(p)
    torch.testing.assert_close(EnumeratedELBO().per_datum(model, guide, p["x"]), log_px)
    assert EnumeratedELBO().loss(model, guide, p["x"]) == pytest.approx(-float(log_px.sum()))
    torch.testing.assert_close(iwae_log_likelihood(model, guide, p["x"], num_samples=7), log_px)
    # y walked in blocks of one class (z drawn per block): the same exact value
    blocked = EnumeratedELBO(chunk_size=1)
    torch.testing.assert_close(blocked.per_datum(model, guide, p["x"]), log_px)
    assert blocked.loss(model, guide, p["x"]) == pytest.approx(-float(log_px.sum()))
    # a wrong guide is strictly below: the test can fail
    load(make_params())
    assert (EnumeratedELBO(num_particles=50).per_datum(model, guide, p["x"]) < log_px - 0.1).all()


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
def test_discrete_elbo_on_mixed_model_is_unbiased():
    p = make_params()
    load(p)
    pyro.set_rng_seed(0)
    ref = EnumeratedELBO(num_particles=200).per_datum(model, guide, p["x"])
    samples = torch.stack([discrete_elbo(model, guide, p["x"]) for _ in range(200)])
    se = samples.std(0) / math.sqrt(len(samples))
    assert ((samples.mean(0) - ref).abs() / se).max() < Z_MAX + 1  # ref has its own MC error
    assert (ref < closed_form_log_px(p)).all()


def test_guide_that_does_not_broadcast_gets_a_one_line_error():
    """A guide that fixes the batch shape (``x.expand(y.shape[:-1] + ...)`` fails once y has
    an enumeration dim): a one-line DVAEInputError naming the enumerated site and the fix."""
    from pyro_dvae.errors import DVAEInputError

    p = make_params()
    load(p)

    def rigid_guide(x, y=None):
        A, c, B, log_sd = (pyro.param(n) for n in ("A", "c", "B", "log_sd"))
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.OneHotCategorical(logits=x @ A.T + c))
            xy = torch.cat([x.expand(y.shape[:-1] + x.shape[-1:]), y], -1)
            pyro.sample("z", dist.Normal(xy @ B.T, log_sd.exp()).to_event(1))

    with pytest.raises(DVAEInputError, match=r"\['y'\].*broadcast") as info:
        EnumeratedELBO().loss(model, rigid_guide, p["x"])
    assert "\n" not in str(info.value)
