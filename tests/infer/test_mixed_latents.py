"""Mixed discrete / continuous latents: ``EnumeratedELBO`` (discrete guide sites summed, continuous
guide sites reparameterized once per enumerated configuration, guide-less discrete model sites
marginalized in the model) and ``ExactMarginalELBO`` (every discrete model site summed inside the
log, guide over the continuous sites only).

Two independent references for every objective:

* Pyro's ``TraceEnum_ELBO`` under the same seed (``pyro.set_rng_seed`` before each call), with
  ``config_enumerate(guide, "parallel")`` and, for guide-less discrete model sites,
  ``config_enumerate(model)``; this assumes the engine draws the continuous noise in Pyro's order
  and shapes (one ``rsample`` per guide site with the enumeration dims left of the plates), as
  the contract states.
* A hand-written sum over y at the continuous samples the engine actually drew: the guides below
  record every ``(y, z)`` they produce (``calls``), so the truth is independent of the draw
  order. The engine may call the guide more than once per loss (e.g. a discovery pass): only
  calls whose ``y`` carries an enumeration dim (more dims than a plain sample) count, identical
  repeated calls (a replay) are counted once, and the test asserts that the counted calls cover
  every (datum, class) pair exactly ``num_particles`` times. Where the guide has no discrete
  site (z only), the loss must equal the hand-written value at one of the recorded z's. The same
  hand checks are run against ``TraceEnum_ELBO`` too, which validates them today.

Everything is float64; small ``nn.Linear`` networks seeded with ``torch.manual_seed``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import TraceEnum_ELBO, config_enumerate
from torch import nn

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.infer import EnumeratedELBO, ExactMarginalELBO

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

F64 = torch.float64
SEED_TOL = dict(rtol=1e-5, atol=1e-8)  # against TraceEnum_ELBO at an equal seed (float64)
SEED_RTOL = 1e-5
HAND_TOL = dict(rtol=1e-6, atol=1e-9)  # against the hand-written sum at the recorded samples
HAND_RTOL = 1e-7
LOG_2PI = torch.log(torch.tensor(2 * torch.pi, dtype=F64))


# ----------------------------------------------------------------- hand-written densities ----
def cat_b(a, b):
    """Concatenate along the last dim after broadcasting every other dim."""
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(shape + a.shape[-1:]), b.expand(shape + b.shape[-1:])], -1)


def log_normal(x, loc, scale):
    """sum over the last dim of log Normal(x; loc, scale)."""
    return (-0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def log_bernoulli(x, logits):
    return (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)


def log_one_hot(y, logits):
    return (y * torch.log_softmax(logits, -1)).sum(-1)


def normal_params(h, d):
    return h[..., :d], F.softplus(h[..., d:]) + 0.1


class Vector(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(value)


def collect_grads(params):
    """{name: grad} of the named parameters, then reset their ``.grad``."""
    out = {}
    for name, p in params.items():
        out[name] = None if p.grad is None else p.grad.clone()
        p.grad = None
    return out


def assert_grads_close(got, expected, tol):
    """Equal gradients; a parameter the reference leaves without one must get none (or zeros)."""
    for name, g in expected.items():
        if g is None:
            assert got[name] is None or not got[name].any(), f"unexpected gradient for {name}"
            continue
        assert got[name] is not None, f"no gradient for {name}"
        torch.testing.assert_close(got[name], g, **tol, msg=lambda m, n=name: f"{n}: {m}")


def enumerated_calls(calls, plain_dim, n, k, num_particles):
    """The recorded (y, z) calls made with an enumerated y, a replayed duplicate counted once;
    asserts that together they cover every (datum, class) exactly ``num_particles`` times."""
    kept = []
    for y, z in calls:
        if y.dim() <= plain_dim:
            continue  # a sampled (not enumerated) y: discovery pass, not part of the sum
        if any(
            y.shape == y2.shape
            and z.shape == z2.shape
            and torch.equal(y, y2)
            and torch.equal(z, z2)
            for y2, z2 in kept
        ):
            continue
        kept.append((y, z))
    assert kept, "the guide was never called with an enumerated y"
    counts = torch.zeros(n, k, dtype=F64)
    for y, z in kept:
        shape = torch.broadcast_shapes(y.shape[:-1], z.shape[:-1], (n,))
        counts += y.detach().expand(shape + (k,)).reshape(-1, n, k).sum(0)
    assert torch.equal(counts, torch.full((n, k), float(num_particles), dtype=F64)), (
        f"enumerated guide calls cover (datum, class) pairs {counts.tolist()} times, expected "
        f"{num_particles} each"
    )
    return kept


# ----------------------------------------------------------------- M2 (semi-supervised VAE) --
K_M2, DZ_M2, DX_M2, N_M2 = 4, 3, 12, 6


class M2:
    """y ~ OneHotCategorical(pi) (4 classes), z ~ Normal(0, I_3), x | y, z ~ Bernoulli(dec(z, y))
    (12 pixels); guide q(y | x) q(z | x, y). ``calls`` records the guide's (y, z)."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.prior = Vector(0.5 * torch.randn(K_M2, dtype=F64))
        self.dec = nn.Linear(DZ_M2 + K_M2, DX_M2).double()
        self.enc_y = nn.Linear(DX_M2, K_M2).double()
        self.enc_z = nn.Linear(DX_M2 + K_M2, 2 * DZ_M2).double()
        self.model_nets = nn.ModuleDict({"prior": self.prior, "dec": self.dec})
        self.guide_nets = nn.ModuleDict({"enc_y": self.enc_y, "enc_z": self.enc_z})
        self.x = torch.bernoulli(torch.full((N_M2, DX_M2), 0.4, dtype=F64))
        self.y = F.one_hot(torch.randint(K_M2, (N_M2,)), K_M2).to(F64)
        self.calls = []

    def params(self):
        named = {f"model.{n}": p for n, p in self.model_nets.named_parameters()}
        named.update({f"guide.{n}": p for n, p in self.guide_nets.named_parameters()})
        return named

    def model(self, x, y=None):
        pyro.module("m2_model", self.model_nets)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.OneHotCategorical(logits=self.prior.value), obs=y)
            z = pyro.sample("z", dist.Normal(torch.zeros(DZ_M2, dtype=F64), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(cat_b(z, y))).to_event(1), obs=x)

    def guide(self, x, y=None):
        pyro.module("m2_guide", self.guide_nets)
        with pyro.plate("data", x.shape[0]):
            if y is None:
                y = pyro.sample("y", dist.OneHotCategorical(logits=self.enc_y(x)))
            loc, scale = normal_params(self.enc_z(cat_b(x, y)), DZ_M2)
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
        self.calls.append((y, z))

    def log_weight(self, x, y, z):
        """log p(x, y, z) - log q(z | x, y), broadcast over y's and z's leading dims."""
        loc, scale = normal_params(self.enc_z(cat_b(x, y)), DZ_M2)
        zeros = torch.zeros(DZ_M2, dtype=F64)
        log_p = (
            log_one_hot(y, self.prior.value)
            + log_normal(z, zeros, torch.ones_like(zeros))
            + log_bernoulli(x, self.dec(cat_b(z, y)))
        )
        return log_p - log_normal(z, loc, scale)

    def unlabelled_terms(self, x, y, z):
        """q(y|x) [log p(x, y, z) - log q(y|x) - log q(z|x, y)] per element."""
        log_qy = log_one_hot(y, self.enc_y(x))
        return log_qy.exp() * (self.log_weight(x, y, z) - log_qy)


def trace_enum(num_particles=1):
    return TraceEnum_ELBO(
        max_plate_nesting=1, num_particles=num_particles, vectorize_particles=False
    )


@pytest.mark.parametrize("num_particles", [1, 3])
def test_m2_unlabelled_matches_trace_enum_at_equal_seed(num_particles):
    """Loss (loss, differentiable_loss, loss_and_grads) and every gradient equal TraceEnum_ELBO's
    with the guide's y enumerated in parallel, at an equal seed. With 3 particles the reference is
    ``TraceEnum_ELBO(num_particles=3, vectorize_particles=False)``: this assumes the engine draws
    the particles one after the other like Pyro; the draw-order-free check is
    :func:`test_m2_unlabelled_equals_hand_sum_at_recorded_z`."""
    m = M2()
    x = m.x
    pyro.set_rng_seed(11)
    ref = trace_enum(num_particles).loss_and_grads(m.model, config_enumerate(m.guide), x)
    ref_grads = collect_grads(m.params())

    elbo = EnumeratedELBO(num_particles=num_particles)
    pyro.set_rng_seed(11)
    assert elbo.loss(m.model, m.guide, x) == pytest.approx(ref, rel=SEED_RTOL)
    pyro.set_rng_seed(11)
    assert elbo.differentiable_loss(m.model, m.guide, x).item() == pytest.approx(ref, rel=SEED_RTOL)
    collect_grads(m.params())
    pyro.set_rng_seed(11)
    loss = elbo.loss_and_grads(m.model, m.guide, x)
    assert loss == pytest.approx(ref, rel=SEED_RTOL)
    assert_grads_close(collect_grads(m.params()), ref_grads, SEED_TOL)


@pytest.mark.parametrize("num_particles", [1, 3])
@pytest.mark.parametrize("engine", ["pyro", "ours"])
def test_m2_unlabelled_equals_hand_sum_at_recorded_z(engine, num_particles):
    """-(1/P) sum_particles sum_n sum_y q(y|x_n) [log p(x_n, y, z_y) - log q(y|x_n) -
    log q(z_y|x_n, y)] at the z_y the guide drew, value and gradients (the pathwise gradient
    through the recorded z_y plus the gradient of the q(y|x) weights). ``pyro`` validates the
    hand-written truth with TraceEnum_ELBO."""
    m = M2()
    x = m.x
    if engine == "pyro":
        elbo, guide = trace_enum(num_particles), config_enumerate(m.guide)
    else:
        elbo, guide = EnumeratedELBO(num_particles=num_particles), m.guide
    params = m.params()
    loss = elbo.differentiable_loss(m.model, guide, x)
    grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True)

    kept = enumerated_calls(m.calls, x.dim(), N_M2, K_M2, num_particles)
    hand = -sum(m.unlabelled_terms(x, y, z).sum() for y, z in kept) / num_particles
    assert loss.item() == pytest.approx(hand.item(), rel=HAND_RTOL)
    hand_grads = torch.autograd.grad(hand, list(params.values()))
    assert_grads_close(dict(zip(params, grads)), dict(zip(params, hand_grads)), HAND_TOL)


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")  # y observed
def test_m2_labelled_matches_trace_enum_at_equal_seed():
    """Labelled data: y observed in the model (``obs=y``), skipped by the guide, so nothing is
    summed and q(y|x) gets no gradient. Then a semi-supervised step (a labelled half and an
    unlabelled half) equals the sum of Pyro's two losses."""
    m = M2()
    x, y = m.x, m.y
    pyro.set_rng_seed(5)
    ref = trace_enum().loss_and_grads(m.model, config_enumerate(m.guide), x, y)
    ref_grads = collect_grads(m.params())
    assert ref_grads["guide.enc_y.weight"] is None  # q(y|x) plays no part with y observed
    pyro.set_rng_seed(5)
    loss = EnumeratedELBO().loss_and_grads(m.model, m.guide, x, y)
    assert loss == pytest.approx(ref, rel=SEED_RTOL)
    assert_grads_close(collect_grads(m.params()), ref_grads, SEED_TOL)

    half = N_M2 // 2
    for seed in (1, 2):
        pyro.set_rng_seed(seed)
        ref = trace_enum().loss(m.model, config_enumerate(m.guide), x[:half], y[:half])
        ref += trace_enum().loss(m.model, config_enumerate(m.guide), x[half:])
        pyro.set_rng_seed(seed)
        ours = EnumeratedELBO().loss(m.model, m.guide, x[:half], y[:half])
        ours += EnumeratedELBO().loss(m.model, m.guide, x[half:])
        assert ours == pytest.approx(ref, rel=SEED_RTOL)


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")  # y observed
@pytest.mark.parametrize("engine", ["pyro", "ours"])
def test_m2_labelled_equals_hand_value_at_recorded_z(engine):
    """Labelled: -sum_n [log p(x_n, y_n, z_n) - log q(z_n|x_n, y_n)] at the guide's z (the loss
    must equal this value at one of the guide's recorded draws), with the same gradients."""
    m = M2()
    x, y = m.x, m.y
    if engine == "pyro":
        elbo, guide = trace_enum(), config_enumerate(m.guide)
    else:
        elbo, guide = EnumeratedELBO(), m.guide
    params = m.params()
    loss = elbo.differentiable_loss(m.model, guide, x, y)
    candidates = [-m.log_weight(x, yy, z).sum() for yy, z in m.calls if z.shape == (N_M2, DZ_M2)]
    match = [c for c in candidates if c.item() == pytest.approx(loss.item(), rel=HAND_RTOL)]
    assert match, f"loss {loss.item()} is none of {[c.item() for c in candidates]}"
    used = {n: p for n, p in params.items() if not n.startswith("guide.enc_y.")}
    got = torch.autograd.grad(loss, list(used.values()), retain_graph=True)
    # the last matching draw: a discovery pass may repeat the draw without gradients
    expected = torch.autograd.grad(match[-1], list(used.values()))
    assert_grads_close(dict(zip(used, got)), dict(zip(used, expected)), HAND_TOL)


# ----------------------------------------------------------------- GMVAE ---------------------
K_G, DZ_G, DX_G, N_G, H_G = 3, 2, 10, 7, 8


class GMVAE:
    """y ~ OneHotCategorical(pi) (3 classes), z | y ~ Normal(mu_y, I_2), x | z ~ Bernoulli(dec(z))
    (10 pixels); guides q(z | x) (``guide_z``) or q(y | x) q(z | x, y) (``guide_yz``)."""

    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.pi = Vector(0.5 * torch.randn(K_G, dtype=F64))
        self.mu = Vector(1.5 * torch.randn(K_G, DZ_G, dtype=F64))
        self.dec = nn.Sequential(nn.Linear(DZ_G, H_G), nn.Tanh(), nn.Linear(H_G, DX_G)).double()
        self.enc_z = nn.Linear(DX_G, 2 * DZ_G).double()
        self.enc_y = nn.Linear(DX_G, K_G).double()
        self.enc_zy = nn.Linear(DX_G + K_G, 2 * DZ_G).double()
        self.model_nets = nn.ModuleDict({"pi": self.pi, "mu": self.mu, "dec": self.dec})
        self.guide_z_nets = nn.ModuleDict({"enc_z": self.enc_z})
        self.guide_yz_nets = nn.ModuleDict({"enc_y": self.enc_y, "enc_zy": self.enc_zy})
        self.x = torch.bernoulli(torch.full((N_G, DX_G), 0.5, dtype=F64))
        self.calls = []

    def params(self, guide):
        nets = self.guide_z_nets if guide == "z" else self.guide_yz_nets
        named = {f"model.{n}": p for n, p in self.model_nets.named_parameters()}
        named.update({f"guide.{n}": p for n, p in nets.named_parameters()})
        return named

    def model(self, x):
        pyro.module("gmvae_model", self.model_nets)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.OneHotCategorical(logits=self.pi.value))
            z = pyro.sample("z", dist.Normal(y @ self.mu.value, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

    def guide_z(self, x):
        pyro.module("gmvae_guide_z", self.guide_z_nets)
        with pyro.plate("data", x.shape[0]):
            loc, scale = normal_params(self.enc_z(x), DZ_G)
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
        self.calls.append((None, z))

    def guide_yz(self, x):
        pyro.module("gmvae_guide_yz", self.guide_yz_nets)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.OneHotCategorical(logits=self.enc_y(x)))
            loc, scale = normal_params(self.enc_zy(cat_b(x, y)), DZ_G)
            z = pyro.sample("z", dist.Normal(loc, scale).to_event(1))
        self.calls.append((y, z))

    def log_p_yz(self, y, z):
        """log p(y) + log p(z | y), broadcast."""
        ones = torch.ones(DZ_G, dtype=F64)
        return log_one_hot(y, self.pi.value) + log_normal(z, y @ self.mu.value, ones)

    def marginal_neg_elbo(self, x, z):
        """-sum_n [logsumexp_y (log p(y) + log p(z_n|y)) + log p(x_n|z_n) - log q(z_n|x_n)]."""
        eye = torch.eye(K_G, dtype=F64).unsqueeze(-2)  # [K, 1, K]: every class, all data
        log_p_z = torch.logsumexp(self.log_p_yz(eye, z), dim=0)  # [N]
        loc, scale = normal_params(self.enc_z(x), DZ_G)
        return -(log_p_z + log_bernoulli(x, self.dec(z)) - log_normal(z, loc, scale)).sum()

    def guide_yz_terms(self, x, y, z):
        """q(y|x) [log p(x, y, z) - log q(y|x) - log q(z|x, y)] per element."""
        log_qy = log_one_hot(y, self.enc_y(x))
        loc, scale = normal_params(self.enc_zy(cat_b(x, y)), DZ_G)
        log_p = self.log_p_yz(y, z) + log_bernoulli(x, self.dec(z))
        return log_qy.exp() * (log_p - log_qy - log_normal(z, loc, scale))


OBJECTIVES = {"exact_marginal": ExactMarginalELBO, "enumerated": EnumeratedELBO}


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_gmvae_model_side_y_matches_trace_enum_at_equal_seed(objective):
    """Guide q(z|x) only: y is summed inside the log in the model. Loss and the gradients of the
    model and guide parameters equal TraceEnum_ELBO's with the model's y enumerated."""
    g = GMVAE()
    x = g.x
    pyro.set_rng_seed(3)
    ref = trace_enum().loss_and_grads(config_enumerate(g.model), g.guide_z, x)
    ref_grads = collect_grads(g.params("z"))

    elbo = OBJECTIVES[objective]()
    pyro.set_rng_seed(3)
    assert elbo.loss(g.model, g.guide_z, x) == pytest.approx(ref, rel=SEED_RTOL)
    pyro.set_rng_seed(3)
    loss = elbo.loss_and_grads(g.model, g.guide_z, x)
    assert loss == pytest.approx(ref, rel=SEED_RTOL)
    assert_grads_close(collect_grads(g.params("z")), ref_grads, SEED_TOL)


@pytest.mark.parametrize("engine", ["pyro", "exact_marginal", "enumerated"])
def test_gmvae_model_side_y_equals_hand_logsumexp_at_recorded_z(engine):
    """The loss is -sum_n [logsumexp_y (log p(y) + log p(z|y)) + log p(x|z) - log q(z|x)] at the z
    the guide drew (one z per datum; the loss must equal this value at one of the guide's recorded
    draws, in case the engine calls the guide more than once), with the same gradients.
    ``pyro`` validates the hand-written truth with TraceEnum_ELBO."""
    g = GMVAE()
    x = g.x
    if engine == "pyro":
        elbo, model = trace_enum(), config_enumerate(g.model)
    else:
        elbo, model = OBJECTIVES[engine](), g.model
    params = g.params("z")
    loss = elbo.differentiable_loss(model, g.guide_z, x)
    candidates = [g.marginal_neg_elbo(x, z) for _, z in g.calls if z.shape == (N_G, DZ_G)]
    match = [c for c in candidates if c.item() == pytest.approx(loss.item(), rel=HAND_RTOL)]
    assert match, f"loss {loss.item()} is none of {[c.item() for c in candidates]}"
    got = torch.autograd.grad(loss, list(params.values()), retain_graph=True)
    # the last matching draw: a discovery pass may repeat the draw without gradients
    expected = torch.autograd.grad(match[-1], list(params.values()))
    assert_grads_close(dict(zip(params, got)), dict(zip(params, expected)), HAND_TOL)


def test_gmvae_guide_y_matches_trace_enum_at_equal_seed():
    g = GMVAE()
    x = g.x
    pyro.set_rng_seed(4)
    ref = trace_enum().loss_and_grads(g.model, config_enumerate(g.guide_yz), x)
    ref_grads = collect_grads(g.params("yz"))
    pyro.set_rng_seed(4)
    loss = EnumeratedELBO().loss_and_grads(g.model, g.guide_yz, x)
    assert loss == pytest.approx(ref, rel=SEED_RTOL)
    assert_grads_close(collect_grads(g.params("yz")), ref_grads, SEED_TOL)


@pytest.mark.parametrize("engine", ["pyro", "ours"])
def test_gmvae_guide_y_equals_hand_sum_at_recorded_z(engine):
    """Guide q(y|x) q(z|x,y): -sum_n sum_y q(y|x_n) [log p(y) + log p(z_y|y) + log p(x_n|z_y) -
    log q(y|x_n) - log q(z_y|x_n, y)] at the recorded z_y (z carries a leading enumeration dim of
    size K over y), value and gradients."""
    g = GMVAE()
    x = g.x
    if engine == "pyro":
        elbo, guide = trace_enum(), config_enumerate(g.guide_yz)
    else:
        elbo, guide = EnumeratedELBO(), g.guide_yz
    params = g.params("yz")
    loss = elbo.differentiable_loss(g.model, guide, x)
    grads = torch.autograd.grad(loss, list(params.values()), retain_graph=True)
    kept = enumerated_calls(g.calls, x.dim(), N_G, K_G, 1)
    hand = -sum(g.guide_yz_terms(x, y, z).sum() for y, z in kept)
    assert loss.item() == pytest.approx(hand.item(), rel=HAND_RTOL)
    hand_grads = torch.autograd.grad(hand, list(params.values()))
    assert_grads_close(dict(zip(params, grads)), dict(zip(params, hand_grads)), HAND_TOL)


# ----------------------------------------------------------------- errors --------------------
LOCS_ERR = torch.tensor([-1.0, 0.0, 1.0], dtype=F64)


def free_continuous_model(x):
    with pyro.plate("data", len(x)):
        y = pyro.sample("y", dist.Categorical(logits=torch.zeros(3, dtype=F64)))
        w = pyro.sample("w_free", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
        pyro.sample("x", dist.Normal(LOCS_ERR[y] + w, 1.0), obs=x)


def guide_y_only(x):
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Categorical(logits=x.unsqueeze(-1) * LOCS_ERR))


@pytest.mark.parametrize(
    "objective, guide",
    [(EnumeratedELBO, guide_y_only), (ExactMarginalELBO, lambda x: None)],
    ids=["enumerated", "exact_marginal"],
)
def test_continuous_model_latent_without_guide_site_is_refused(objective, guide):
    """A continuous model latent with no guide site can be neither summed nor sampled from q."""
    x = torch.tensor([0.3, -1.2, 0.8, 2.0], dtype=F64)
    with pytest.raises(DVAEInputError) as info:
        objective().loss(free_continuous_model, guide, x)
    message = str(info.value)
    assert "w_free" in message
    assert "\n" not in message and len(message) < 300, message
