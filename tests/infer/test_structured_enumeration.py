"""Structured exact enumeration: plate-local latents summed per plate element, ``pyro.markov``
chains by variable elimination, ``.to_event(1)`` groups enumerated jointly in chunks, subsampled
plates, and the one-line error messages.

Every ground truth is written out here by hand (numpy or torch, float64): per-pixel logsumexps, a
forward algorithm, brute force over 2^6 codes. Where Pyro's own ``TraceEnum_ELBO`` can compute the
same number, the hand-written truth is first checked against it (so that a failure of the code
under test cannot be a mistake in the truth).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceEnum_ELBO, config_enumerate

from pyro_dvae.errors import DVAEInputError, LatentSpaceTooLargeError
from pyro_dvae.infer import EnumeratedELBO, ExactMarginalELBO, exact_log_likelihood

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

F64 = torch.float64
RTOL = 1e-6  # float64 throughout; against hand-written sums
PYRO_RTOL = 1e-6  # hand-written truth against Pyro's TraceEnum_ELBO (float64)


def empty_guide(*args, **kwargs):
    pass


# ----------------------------------------------------------------- numpy helpers -------------
def np_lse(a, axis=0):
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def np_log_softmax(a):
    return a - np_lse(a, -1)[..., None]


def np_normal_lp(x, mu, s):
    """Elementwise log Normal(x; mu, s) (no sum)."""
    return -0.5 * ((x - mu) / s) ** 2 - np.log(s) - 0.5 * math.log(2 * math.pi)


def assert_one_line(message, max_len=300):
    assert "\n" not in message, f"message spans several lines: {message!r}"
    assert len(message) < max_len, f"message has {len(message)} characters: {message!r}"


rng = np.random.default_rng(2024)


# ----------------------------------------------------------------- 1. per-pixel mixture ------
N1, P1, K1 = 30, 20, 3
PROBS1 = np.exp(np_log_softmax(rng.normal(size=K1)))
LOCS1 = np.array([-2.0, 0.0, 1.5])
SCALE1 = 0.7
X1 = 1.5 * rng.normal(size=(N1, P1))


def pixel_mixture(x):
    """Every pixel of every datum has its own 3-state latent: 3^600 joint configurations."""
    locs = torch.tensor(LOCS1)
    with pyro.plate("data", x.shape[0], dim=-2):
        with pyro.plate("pix", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Categorical(torch.tensor(PROBS1)))
            pyro.sample("x", dist.Normal(locs[z], SCALE1), obs=x)


def pixel_mixture_truth():
    """[N1, P1] log p(x_np) = logsumexp_z log p(z) + log N(x_np; locs[z], scale)."""
    terms = np.log(PROBS1) + np_normal_lp(X1[..., None], LOCS1, SCALE1)  # [N, P, K]
    return np_lse(terms, axis=-1)


def test_pixel_mixture_in_nested_plates():
    x = torch.tensor(X1)
    per_pixel = pixel_mixture_truth()
    # the truth against Pyro: with an empty guide, TraceEnum_ELBO's loss is -sum log p(x)
    pyro_loss = TraceEnum_ELBO(max_plate_nesting=2).loss(
        config_enumerate(pixel_mixture), empty_guide, x
    )
    assert -pyro_loss == pytest.approx(per_pixel.sum(), rel=PYRO_RTOL)

    got = exact_log_likelihood(pixel_mixture, x)
    # Both plates hold every sample site here. The issue asks for one value per datum ([30],
    # pixels summed); the data-plate rule of pyro_dvae.infer.util ("plates that contain every
    # sample site", flattened) gives [600] in data-major order. Either is checked exactly.
    if got.shape == (N1 * P1,):
        expected = per_pixel.reshape(-1)
    else:
        assert got.shape == (N1,), f"unexpected shape {tuple(got.shape)}"
        expected = per_pixel.sum(-1)
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL)
    assert float(got.sum()) == pytest.approx(-pyro_loss, rel=RTOL)


# ----------------------------------------------------------------- 2. per-datum class --------
N2, P2, K2, Y2 = 12, 20, 3, 2  # 2 x 3^20 joint configurations per datum
PY2 = np.array([0.35, 0.65])
PZ2 = np.exp(np_log_softmax(2.0 * rng.normal(size=(Y2, K2))))  # p(z | y), rows
LOCS2 = np.array([-1.5, 0.2, 2.0])
SCALE2 = 0.8
X2 = 1.5 * rng.normal(size=(N2, P2))


def class_pixel_mixture(x):
    """A per-datum class y (outside the pixel plate) sets the distribution of per-pixel z's."""
    locs = torch.tensor(LOCS2)
    with pyro.plate("data", x.shape[0], dim=-2):
        y = pyro.sample("y", dist.Categorical(torch.tensor(PY2)))
        with pyro.plate("pix", x.shape[1], dim=-1):
            z = pyro.sample("z", dist.Categorical(torch.tensor(PZ2)[y]))
            pyro.sample("x", dist.Normal(locs[z], SCALE2), obs=x)


def class_pixel_mixture_truth():
    """[N2] log sum_y p(y) prod_pix sum_z p(z|y) N(x; locs[z], scale)."""
    lik = np_normal_lp(X2[..., None], LOCS2, SCALE2)  # [N, P, K]
    per_y = []
    for y in range(Y2):
        per_pixel = np_lse(np.log(PZ2[y]) + lik, axis=-1)  # [N, P]
        per_y.append(math.log(PY2[y]) + per_pixel.sum(-1))
    return np_lse(np.stack(per_y), axis=0)


def test_per_datum_class_with_per_pixel_latents():
    x = torch.tensor(X2)
    expected = class_pixel_mixture_truth()
    pyro_loss = TraceEnum_ELBO(max_plate_nesting=2).loss(
        config_enumerate(class_pixel_mixture), empty_guide, x
    )
    assert -pyro_loss == pytest.approx(expected.sum(), rel=PYRO_RTOL)

    got = exact_log_likelihood(class_pixel_mixture, x)
    assert got.shape == (N2,)
    np.testing.assert_allclose(got.numpy(), expected, rtol=RTOL)


# ----------------------------------------------------------------- 3. HMM --------------------
S3, K3 = 8, 3
INIT3 = np.array([0.5, 0.3, 0.2])
TRANS3 = np.array([[0.8, 0.15, 0.05], [0.1, 0.7, 0.2], [0.25, 0.25, 0.5]])
LOCS3 = np.array([-1.0, 0.5, 2.0])
SCALE3 = 0.9


def hmm_data(num_steps, num_seqs=S3, seed=3):
    return np.random.default_rng(seed).normal(size=(num_seqs, num_steps)) * 1.5 + 0.3


def hmm_model(x, use_markov=True):
    """z_0 ~ Cat(init), z_t | z_{t-1} ~ Cat(trans[z_{t-1}]), x_t ~ Normal(locs[z_t], scale)."""
    init, trans, locs = torch.tensor(INIT3), torch.tensor(TRANS3), torch.tensor(LOCS3)
    steps = pyro.markov(range(x.shape[1])) if use_markov else range(x.shape[1])
    with pyro.plate("sequences", x.shape[0], dim=-1):
        z = None
        for t in steps:
            probs = init if z is None else trans[z]
            z = pyro.sample(f"z_{t}", dist.Categorical(probs))
            pyro.sample(f"x_{t}", dist.Normal(locs[z], SCALE3), obs=x[:, t])


def hmm_python_loop(x):
    """The same chain written as a plain python loop (no pyro.markov): 30 dependent sites."""
    hmm_model(x, use_markov=False)


def forward_algorithm(x):
    """[S] log p(x_{0:T}) per sequence by the forward recursion, numpy float64."""
    log_trans = np.log(TRANS3)
    alpha = np.log(INIT3) + np_normal_lp(x[:, 0, None], LOCS3, SCALE3)  # [S, K]
    for t in range(1, x.shape[1]):
        alpha = np_lse(alpha[:, :, None] + log_trans, axis=1)  # [S, K_next]
        alpha = alpha + np_normal_lp(x[:, t, None], LOCS3, SCALE3)
    return np_lse(alpha, axis=-1)


def test_forward_algorithm_matches_pyro():
    """The hand-written forward algorithm (the truth below) against Pyro's TraceEnum_ELBO."""
    x = hmm_data(30)
    pyro_loss = TraceEnum_ELBO(max_plate_nesting=1).loss(
        config_enumerate(hmm_model), empty_guide, torch.tensor(x)
    )
    assert -pyro_loss == pytest.approx(forward_algorithm(x).sum(), rel=PYRO_RTOL)


@pytest.mark.parametrize("num_steps", [30, 200])
def test_hmm_markov_chain(num_steps):
    """Variable elimination along a pyro.markov chain: 3^200 joint configurations, linear work
    (correctness only, no timing assertion)."""
    x = hmm_data(num_steps)
    got = exact_log_likelihood(hmm_model, torch.tensor(x))
    assert got.shape == (S3,)
    np.testing.assert_allclose(got.numpy(), forward_algorithm(x), rtol=RTOL)


# ----------------------------------------------------------------- 4. coupled .to_event ------
N4, U4, H4, P4, C4 = 5, 6, 5, 4, 3
COUPLED_INIT = {
    "pz": rng.normal(size=U4),  # prior logits of the 6 units
    "w1": rng.normal(size=(U4, H4)),
    "b1": 0.5 * rng.normal(size=H4),
    "w2": rng.normal(size=(H4, P4)),
    "off": np.array([-1.0, 0.0, 1.2]),  # per-pixel offset of each of the 3 pixel states
    "pc": np.exp(np_log_softmax(rng.normal(size=C4))),
    "qa": 0.5 * rng.normal(size=(P4, U4)),  # guide: logits = x @ qa + qb
    "qb": 0.5 * rng.normal(size=U4),
}
SIGMA4 = 0.6
X4 = 1.5 * rng.normal(size=(N4, P4))
MODEL4 = ("pz", "w1", "b1", "w2", "off")
GUIDE4 = ("qa", "qb")


def load_coupled_params():
    pyro.clear_param_store()
    for name in MODEL4 + GUIDE4:
        pyro.param(name, torch.tensor(COUPLED_INIT[name]))


def coupled_model(x):
    """z: 6 Bernoulli units in one ``.to_event(1)`` site, coupled by a tanh decoder; each pixel
    also has its own 3-state offset c, independent of everything else a priori."""
    pz, w1, b1, w2, off = (pyro.param(n) for n in MODEL4)
    with pyro.plate("data", x.shape[0], dim=-2):
        z = pyro.sample("z", dist.Bernoulli(logits=pz).to_event(1))  # [..., N, 1, U]
        mean = torch.tanh(z @ w1 + b1) @ w2  # [..., N, 1, P]
        with pyro.plate("pix", x.shape[1], dim=-1):
            c = pyro.sample("c", dist.Categorical(torch.tensor(COUPLED_INIT["pc"])))
            pyro.sample("x", dist.Normal(mean[..., 0, :] + off[c], SIGMA4), obs=x)


def coupled_guide(x):
    """q(z | x) = prod_u Bernoulli(sigmoid((x @ qa + qb)_u)); c is left to the model."""
    qa, qb = pyro.param("qa"), pyro.param("qb")
    with pyro.plate("data", x.shape[0], dim=-2):
        pyro.sample("z", dist.Bernoulli(logits=(x @ qa + qb).unsqueeze(-2)).to_event(1))


CODES4 = torch.tensor(list(itertools.product((0.0, 1.0), repeat=U4)), dtype=F64)  # [64, U]


def coupled_log_joint(params, x):
    """[64, N] log p(x_n, z) with c summed out per pixel, every code z written out."""
    pz, w1, b1, w2, off = (params[n] for n in MODEL4)
    log_pz = (
        CODES4 * torch.nn.functional.logsigmoid(pz)
        + (1 - CODES4) * torch.nn.functional.logsigmoid(-pz)
    ).sum(-1)  # [64]
    mean = torch.tanh(CODES4 @ w1 + b1) @ w2  # [64, P]
    log_pc = torch.log(torch.tensor(COUPLED_INIT["pc"]))
    # [64, N, P, C]: log p(c) + log N(x_np; mean_zp + off_c, sigma)
    resid = (x[:, :, None] - mean[:, None, :, None] - off) / SIGMA4
    lik = -0.5 * resid**2 - math.log(SIGMA4) - 0.5 * math.log(2 * math.pi)
    per_pixel = torch.logsumexp(log_pc + lik, dim=-1)  # [64, N, P]
    return log_pz[:, None] + per_pixel.sum(-1)


def coupled_elbo(params, x):
    """[N] sum_z q(z|x) [log p(x, z) - log q(z|x)] over the 64 codes (c marginalized)."""
    logits = x @ params["qa"] + params["qb"]  # [N, U]
    log_q = (
        CODES4[:, None] * torch.nn.functional.logsigmoid(logits)
        + (1 - CODES4[:, None]) * torch.nn.functional.logsigmoid(-logits)
    ).sum(-1)  # [64, N]
    return (log_q.exp() * (coupled_log_joint(params, x) - log_q)).sum(0)


def coupled_reference():
    """Hand-written value and gradients of the negative ELBO (autograd on fresh leaves)."""
    leaves = {n: torch.tensor(v).requires_grad_() for n, v in COUPLED_INIT.items()}
    loss = -coupled_elbo(leaves, torch.tensor(X4)).sum()
    loss.backward()
    return loss.item(), {n: leaves[n].grad for n in MODEL4 + GUIDE4}


def store_grads():
    store = pyro.get_param_store()
    grads = {}
    for n in MODEL4 + GUIDE4:
        g = store.get_param(n).unconstrained().grad
        grads[n] = None if g is None else g.clone()
    return grads


def test_coupled_to_event_site_with_local_pixel_latents():
    load_coupled_params()
    x = torch.tensor(X4)
    with torch.no_grad():
        params = {n: torch.tensor(v) for n, v in COUPLED_INIT.items()}
        expected = torch.logsumexp(coupled_log_joint(params, x), dim=0)
    got = exact_log_likelihood(coupled_model, x)
    assert got.shape == (N4,)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=0.0)


def test_coupled_hand_truth_is_full_brute_force():
    """The per-pixel sum in :func:`coupled_log_joint` against a brute force over all 64 x 3^4
    joint configurations of (z, c), in numpy (checks the truth itself)."""
    v = COUPLED_INIT
    log_pc = np.log(v["pc"])
    terms = []
    for z in itertools.product((0.0, 1.0), repeat=U4):
        z = np.array(z)
        lpz = (-np.logaddexp(0, -v["pz"]) * z - np.logaddexp(0, v["pz"]) * (1 - z)).sum()
        mean = np.tanh(z @ v["w1"] + v["b1"]) @ v["w2"]  # [P]
        for cs in itertools.product(range(C4), repeat=P4):
            cs = list(cs)
            lik = np_normal_lp(X4, mean + v["off"][cs], SIGMA4).sum(-1)  # [N]
            terms.append(lpz + log_pc[cs].sum() + lik)
    brute = np_lse(np.stack(terms), axis=0)
    params = {n: torch.tensor(t) for n, t in v.items()}
    got = torch.logsumexp(coupled_log_joint(params, torch.tensor(X4)), dim=0)
    np.testing.assert_allclose(got.numpy(), brute, rtol=1e-10)


# ----------------------------------------------------------------- 7. chunking invariance ----
@pytest.mark.parametrize("chunk_size", [3, 7])
def test_coupled_exact_log_likelihood_chunking(chunk_size):
    load_coupled_params()
    x = torch.tensor(X4)
    reference = exact_log_likelihood(coupled_model, x)
    got = exact_log_likelihood(coupled_model, x, chunk_size=chunk_size)
    torch.testing.assert_close(got, reference, rtol=1e-6, atol=0.0)
    with torch.no_grad():
        params = {n: torch.tensor(v) for n, v in COUPLED_INIT.items()}
        expected = torch.logsumexp(coupled_log_joint(params, x), dim=0)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=0.0)


@pytest.mark.slow  # seconds of training or sampling: make test-fast skips it
@pytest.mark.parametrize("chunk_size", [3, 7])
def test_coupled_enumerated_elbo_loss_and_grads_chunking(chunk_size):
    """EnumeratedELBO on the coupled model (z summed in the guide, c marginalized in the model):
    loss and every parameter gradient (``loss_and_grads``, read from ``.grad``) equal the
    hand-written sum over the 64 codes, and chunks of a few codes give the default chunking's
    numbers to 1e-6."""
    ref_loss, ref_grads = coupled_reference()
    x = torch.tensor(X4)
    results = {}
    for cs in (None, chunk_size):
        load_coupled_params()
        loss = EnumeratedELBO(chunk_size=cs).loss_and_grads(coupled_model, coupled_guide, x)
        grads = store_grads()
        results[cs] = (loss, grads)
        assert loss == pytest.approx(ref_loss, rel=RTOL)
        for n in MODEL4 + GUIDE4:
            assert grads[n] is not None, f"no gradient for {n}"
            torch.testing.assert_close(grads[n], ref_grads[n], rtol=1e-6, atol=1e-9)
    assert results[chunk_size][0] == pytest.approx(results[None][0], rel=1e-6)
    for n in MODEL4 + GUIDE4:
        torch.testing.assert_close(
            results[chunk_size][1][n], results[None][1][n], rtol=1e-6, atol=1e-9
        )
    # loss() (no gradient) gives the same value
    load_coupled_params()
    loss = EnumeratedELBO(chunk_size=chunk_size).loss(coupled_model, coupled_guide, x)
    assert loss == pytest.approx(ref_loss, rel=RTOL)


# ----------------------------------------------------------------- 5. subsampled plate -------
NFULL5, NSUB5 = 1000, 50
X5 = 2.0 * np.random.default_rng(5).normal(size=NFULL5)
IDX5 = np.sort(np.random.default_rng(6).choice(NFULL5, size=NSUB5, replace=False))
SUB_INIT = {
    "sub_prior": np.array([0.4, -0.2, 0.1]),
    "sub_locs": np.array([-2.0, 0.3, 1.8]),
    "sub_w": np.array([-0.6, 0.1, 0.7]),
    "sub_b": np.array([0.2, 0.0, -0.3]),
}
SCALE5 = NFULL5 / NSUB5  # 20: Pyro's scale for a subsample of 50 of 1000


def load_sub_params():
    pyro.clear_param_store()
    for name, value in SUB_INIT.items():
        pyro.param(name, torch.tensor(value))


def sub_model(x, idx):
    prior, locs = pyro.param("sub_prior"), pyro.param("sub_locs")
    with pyro.plate("data", len(x), subsample=idx) as ind:
        y = pyro.sample("y", dist.Categorical(logits=prior))
        pyro.sample("x", dist.Normal(locs[y], 1.0), obs=x[ind])


def sub_guide(x, idx):
    w, b = pyro.param("sub_w"), pyro.param("sub_b")
    with pyro.plate("data", len(x), subsample=idx) as ind:
        pyro.sample("y", dist.Categorical(logits=x[ind].unsqueeze(-1) * w + b))


def sub_truth():
    """(-ELBO, -log p(x)) summed over the subsample and scaled by 1000/50, numpy."""
    xs = X5[IDX5]
    log_joint = np_log_softmax(SUB_INIT["sub_prior"]) + np_normal_lp(
        xs[:, None], SUB_INIT["sub_locs"], 1.0
    )  # [50, 3]
    log_q = np_log_softmax(xs[:, None] * SUB_INIT["sub_w"] + SUB_INIT["sub_b"])
    elbo = (np.exp(log_q) * (log_joint - log_q)).sum(-1)
    return -SCALE5 * elbo.sum(), -SCALE5 * np_lse(log_joint, axis=-1).sum()


def param_grads(names):
    store = pyro.get_param_store()
    out = {}
    for n in names:
        g = store.get_param(n).unconstrained().grad
        out[n] = None if g is None else g.clone()
        if g is not None:
            g.zero_()
    return out


def test_subsampled_plate_enumerated_elbo_matches_pyro_scaling():
    x, idx = torch.tensor(X5), torch.tensor(IDX5)
    neg_elbo, _ = sub_truth()
    load_sub_params()
    pyro_loss = TraceEnum_ELBO(max_plate_nesting=1).loss_and_grads(
        sub_model, config_enumerate(sub_guide), x, idx
    )
    assert pyro_loss == pytest.approx(neg_elbo, rel=PYRO_RTOL)
    pyro_grads = param_grads(SUB_INIT)

    load_sub_params()
    assert EnumeratedELBO().loss(sub_model, sub_guide, x, idx) == pytest.approx(neg_elbo, rel=RTOL)
    loss = EnumeratedELBO().loss_and_grads(sub_model, sub_guide, x, idx)
    assert loss == pytest.approx(neg_elbo, rel=RTOL)
    grads = param_grads(SUB_INIT)
    for n in SUB_INIT:
        assert grads[n] is not None, f"no gradient for {n}"
        torch.testing.assert_close(grads[n], pyro_grads[n], rtol=1e-6, atol=1e-9)


def test_subsampled_plate_exact_marginal_elbo_matches_pyro_scaling():
    x, idx = torch.tensor(X5), torch.tensor(IDX5)
    _, neg_log_px = sub_truth()
    load_sub_params()
    pyro_loss = TraceEnum_ELBO(max_plate_nesting=1).loss_and_grads(
        config_enumerate(sub_model), empty_guide, x, idx
    )
    assert pyro_loss == pytest.approx(neg_log_px, rel=PYRO_RTOL)
    pyro_grads = param_grads(("sub_prior", "sub_locs"))

    load_sub_params()
    assert ExactMarginalELBO().loss(sub_model, empty_guide, x, idx) == pytest.approx(
        neg_log_px, rel=RTOL
    )
    loss = ExactMarginalELBO().loss_and_grads(sub_model, empty_guide, x, idx)
    assert loss == pytest.approx(neg_log_px, rel=RTOL)
    grads = param_grads(("sub_prior", "sub_locs"))
    for n in grads:
        assert grads[n] is not None, f"no gradient for {n}"
        torch.testing.assert_close(grads[n], pyro_grads[n], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("how", ["subsample_size", "subsample"])
def test_subsampled_plate_in_exact_log_likelihood_raises(how):
    x = torch.tensor(X5)

    def model(x):
        kwargs = (
            {"subsample_size": NSUB5}
            if how == "subsample_size"
            else {"subsample": torch.tensor(IDX5)}
        )
        with pyro.plate("data", len(x), **kwargs) as ind:
            y = pyro.sample("y", dist.Categorical(logits=torch.zeros(3, dtype=F64)))
            pyro.sample("x", dist.Normal(torch.tensor(LOCS1)[y], 1.0), obs=x[ind])

    with pytest.raises(DVAEInputError) as info:
        exact_log_likelihood(model, x)
    assert "subsample" in str(info.value)
    assert_one_line(str(info.value))


# ----------------------------------------------------------------- 6. error messages ---------
def test_continuous_latent_is_refused_naming_the_site():
    def model(x):
        with pyro.plate("data", len(x)):
            y = pyro.sample("y", dist.Categorical(logits=torch.zeros(3, dtype=F64)))
            tau = pyro.sample("tau_cont", dist.Normal(torch.tensor(0.0, dtype=F64), 1.0))
            pyro.sample("x", dist.Normal(torch.tensor(LOCS1)[y] + tau, 1.0), obs=x)

    with pytest.raises(DVAEInputError) as info:
        exact_log_likelihood(model, torch.zeros(4, dtype=F64))
    assert "tau_cont" in str(info.value)
    assert_one_line(str(info.value))


def test_too_large_to_event_group_message_is_one_line():
    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(30, dtype=F64)).to_event(1))
            pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)

    with pytest.raises(LatentSpaceTooLargeError) as info:
        exact_log_likelihood(model, torch.zeros(3, dtype=F64))
    assert "2^30" in str(info.value)
    assert_one_line(str(info.value))


def test_too_large_per_pixel_group_message_is_one_line():
    """A 25-unit group in every pixel: each pixel's own space (2^25) exceeds the default limit;
    the message names it once instead of repeating one factor per pixel or per datum."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            with pyro.plate("pix", x.shape[1], dim=-1):
                z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(25, dtype=F64)).to_event(1))
                pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)

    with pytest.raises(LatentSpaceTooLargeError) as info:
        exact_log_likelihood(model, torch.zeros(3, 8, dtype=F64))
    assert "2^25" in str(info.value)
    assert_one_line(str(info.value))


def test_python_loop_chain_is_computed_or_refused_in_one_line():
    """30 dependent 3-state sites in a plain python loop (no pyro.markov): either computed
    exactly, or refused with a message that says 3^30 once (not thirty '3^1' factors)."""
    x = hmm_data(30, num_seqs=2, seed=7)
    try:
        got = exact_log_likelihood(hmm_python_loop, torch.tensor(x))
    except LatentSpaceTooLargeError as e:
        assert "3^30" in str(e)
        assert_one_line(str(e))
    else:
        assert got.shape == (2,)
        np.testing.assert_allclose(got.numpy(), forward_algorithm(x), rtol=RTOL)


# ----------------------------------------------------------------- single enumerated pass ----
def test_single_pass_applies_where_the_plan_is_one_block():
    from pyro_dvae.infer import structured_enumeration
    from pyro_dvae.infer.structured_enumeration import StructuredEnumeration

    cases = [
        (pixel_mixture, torch.tensor(X1), True),
        (class_pixel_mixture, torch.tensor(X2), True),
        (hmm_model, torch.tensor(hmm_data(30)), True),
        (coupled_model, torch.tensor(X4), False),  # a .to_event group: joint support
    ]
    load_coupled_params()
    structured_enumeration._NESTING_CACHE.clear()
    for model, x, expected in cases:
        first = StructuredEnumeration(model, args=(x,), guide_side=False)
        assert first._pending is None  # the plate nesting is not known yet: analysis pass
        single = StructuredEnumeration(model, args=(x,), guide_side=False)
        assert (single._pending is not None) == expected, model.__name__
        analysed = StructuredEnumeration(model, args=(x,), guide_side=False, single_pass=False)
        assert analysed._pending is None
        torch.testing.assert_close(
            single.log_marginal(), analysed.log_marginal(), rtol=1e-12, atol=0
        )


def _mixed_model(x):
    w = pyro.param("w", torch.tensor([[0.5, -1.0, 2.0]], dtype=F64))
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(logits=torch.zeros(3, dtype=F64)))
        z = pyro.sample("z", dist.Normal(w[0][y], 1.0))
        pyro.sample("x", dist.Normal(z, 0.5), obs=x)


def _mixed_guide(x):
    a = pyro.param("a", torch.tensor([0.3, -0.2, 0.1], dtype=F64))
    with pyro.plate("data", x.shape[0]):
        y = pyro.sample("y", dist.Categorical(logits=a * x.unsqueeze(-1)))
        pyro.sample("z", dist.Normal(0.5 * x + a[y], 0.8))


def test_single_pass_and_analysis_pass_draw_the_same_numbers(monkeypatch):
    """Same seed, same loss, gradients and RNG state afterwards, whether the structure is read
    off the first enumerated pass or by a separate analysis pass (rolled back RNG)."""
    from pyro_dvae.infer import structured_enumeration

    x = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=F64)
    analyses = []
    analyse = structured_enumeration.StructuredEnumeration._analyse

    def counted(self, *args):
        analyses.append(1)
        return analyse(self, *args)

    monkeypatch.setattr(structured_enumeration.StructuredEnumeration, "_analyse", counted)
    results = []
    for limit in (structured_enumeration.SINGLE_PASS_MAX_CONFIGURATIONS, 0):
        monkeypatch.setattr(structured_enumeration, "SINGLE_PASS_MAX_CONFIGURATIONS", limit)
        pyro.clear_param_store()
        EnumeratedELBO().loss(_mixed_model, _mixed_guide, x)  # the plate nesting is now known
        analyses.clear()
        pyro.set_rng_seed(3)
        loss = EnumeratedELBO().differentiable_loss(_mixed_model, _mixed_guide, x)
        assert len(analyses) == (0 if limit else 1)  # single pass, then the analysis pass
        params = [pyro.param("w").unconstrained(), pyro.param("a").unconstrained()]
        grads = torch.autograd.grad(loss, params)
        results.append((loss.detach(), grads, torch.rand(())))
    (l1, g1, r1), (l2, g2, r2) = results
    torch.testing.assert_close(l1, l2, rtol=1e-12, atol=0)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    assert r1 == r2


def test_a_single_pass_that_does_not_apply_leaves_the_rng_as_it_found_it():
    """chunk_size=1: three blocks, so the single pass (which drew z from the guide) is thrown
    away after the fact; the RNG must be rolled back to where it was."""
    from pyro_dvae.infer.structured_enumeration import StructuredEnumeration

    x = torch.tensor([0.3, -1.2, 2.0, 0.7], dtype=F64)
    StructuredEnumeration(_mixed_model, _mixed_guide, (x,))  # the plate nesting is now known
    draws = []
    for single_pass in (True, False):
        pyro.clear_param_store()
        pyro.set_rng_seed(4)
        space = StructuredEnumeration(
            _mixed_model, _mixed_guide, (x,), chunk_size=1, single_pass=single_pass
        )
        assert space.num_blocks == 3 and space._pending is None
        draws.append(torch.rand(3))
    assert torch.equal(draws[0], draws[1])
