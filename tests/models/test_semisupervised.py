"""SemiSupervisedVAE (M2): shapes, the exact objectives against hand-written sums at the z the
guide drew and against Pyro's TraceEnum_ELBO at equal seeds, the classification term's weight,
the relaxed estimator, and a short training run on separable synthetic data."""

from __future__ import annotations

import pyro
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate

from pyro_dvae.infer import EnumeratedELBO, GumbelSoftmaxELBO, TorchOptimSVI
from pyro_dvae.models import SemiSupervisedVAE

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: single-threaded

F64 = torch.float64
LOG_2PI = torch.log(torch.tensor(2 * torch.pi, dtype=F64))
C, DZ, DX, N = 3, 2, 10, 5


class Recording(SemiSupervisedVAE):
    """Records the ``(y, z)`` of every guide call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def guide(self, x, y=None, scale=1.0):
        out = super().guide(x, y, scale)
        self.calls.append(out)
        return out


def make(alpha: float = 3.0, cls=Recording, **kw) -> SemiSupervisedVAE:
    torch.manual_seed(0)
    return cls(DX, C, DZ, hidden=(6,), alpha=alpha, **kw).double()


def data():
    torch.manual_seed(1)
    x = torch.bernoulli(torch.full((N, DX), 0.4, dtype=F64))
    y = F.one_hot(torch.tensor([0, 1, 2, 1, 0]), C).to(F64)
    return x, y


# ------------------------------------------------------------ hand-written densities ---------
def cat_b(a, b):
    shape = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(shape + a.shape[-1:]), b.expand(shape + b.shape[-1:])], -1)


def log_normal(v, loc, scale):
    return (-0.5 * ((v - loc) / scale) ** 2 - torch.log(scale) - 0.5 * LOG_2PI).sum(-1)


def log_bernoulli(x, logits):
    return (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)


def log_q_y(m, x, y):
    return (y * torch.log_softmax(m.classifier(x), -1)).sum(-1)


def log_weight(m, x, y, z):
    """log p(y) + log p(z) + log p(x | y, z) - log q(z | x, y) from the raw networks."""
    loc, log_scale = m.encoder(cat_b(x, y)).split(DZ, -1)
    log_p = (
        -torch.log(torch.tensor(float(C), dtype=F64))
        + log_normal(z, torch.zeros_like(z), torch.ones_like(z))
        + log_bernoulli(x, m.decoder(cat_b(y, z)))
    )
    return log_p - log_normal(z, loc, log_scale.exp())


def unlabelled_hand_loss(m, x, calls):
    """-sum_n sum_y q(y|x_n) [log p(x_n, y, z_y) - log q(y|x_n) - log q(z_y|x_n, y)] at the z_y
    of the (single) guide call with an enumerated y."""
    enumerated = [(y, z) for y, z in calls if y.dim() > x.dim()]
    assert enumerated, "no guide call with an enumerated y"
    y, z = enumerated[-1]
    assert z.shape == (C, N, DZ)
    assert torch.equal(y.squeeze(-2), torch.eye(C, dtype=F64))  # every class, once
    lq = log_q_y(m, x, y)
    return -(lq.exp() * (log_weight(m, x, y, z) - lq)).sum()


# ------------------------------------------------------------ shapes --------------------------
def test_shapes_broadcast_over_an_enumerated_y():
    m = make(batch_norm=True, classifier_dropout=0.1)
    x, _ = data()
    y = torch.eye(C, dtype=F64).reshape(C, 1, C)  # enumeration dim left of the plate
    assert m.classifier_logits(x).shape == (N, C)
    assert m.q_y(x).batch_shape == (N,)
    assert m.q_z(x, y).batch_shape == (C, N) and m.q_z(x, y).event_shape == (DZ,)
    assert m.decoder_logits(y, torch.zeros(C, N, DZ, dtype=F64)).shape == (C, N, DX)
    labels = m.classify(x)
    assert labels.shape == (N,) and labels.dtype == torch.long
    assert m.training  # classify restores the mode it found
    assert m.accuracy(x, labels) == 1.0
    assert m.classify(x[:0]).shape == (0,)


def test_int_and_sequence_widths():
    m = SemiSupervisedVAE(DX, C, DZ, hidden=4, classifier_hidden=(7, 5))
    linears = [mod.out_features for mod in m.classifier if isinstance(mod, torch.nn.Linear)]
    assert linears == [7, 5, C]
    assert [mod.out_features for mod in m.decoder if isinstance(mod, torch.nn.Linear)] == [4, DX]


# ------------------------------------------------------------ exact objectives ----------------
@pytest.mark.parametrize("engine", ["ours", "pyro"])
def test_unlabelled_loss_and_grads_equal_hand_sum_at_recorded_z(engine):
    """EnumeratedELBO (and TraceEnum_ELBO, which validates the hand-written truth) sum y exactly:
    the loss and every gradient equal the hand-written sum over y at the z_y drawn."""
    m = make()
    x, _ = data()
    if engine == "ours":
        elbo, guide = EnumeratedELBO(), m.guide
    else:
        elbo, guide = TraceEnum_ELBO(max_plate_nesting=1), config_enumerate(m.guide)
    loss = elbo.differentiable_loss(m.model, guide, x)
    hand = unlabelled_hand_loss(m, x, m.calls)
    assert loss.item() == pytest.approx(hand.item(), rel=1e-9)
    params = list(m.parameters())
    got = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    expected = torch.autograd.grad(hand, params, allow_unused=True)
    for g, e in zip(got, expected):
        if e is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, e, rtol=1e-7, atol=1e-10)


def test_unlabelled_loss_equals_trace_enum_at_equal_seed():
    m = make()
    x, _ = data()
    pyro.set_rng_seed(7)
    ref = TraceEnum_ELBO(max_plate_nesting=1).loss(m.model, config_enumerate(m.guide), x)
    pyro.set_rng_seed(7)
    assert EnumeratedELBO().loss(m.model, m.guide, x) == pytest.approx(ref, rel=1e-9)


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")  # y observed
@pytest.mark.parametrize("scale", [1.0, 0.01])
def test_labelled_loss_is_scaled_elbo_plus_alpha_classification(scale):
    """y observed: -[scale * (log p(x, y, z) - log q(z|x, y)) + alpha * log q(y|x)] at the z
    the guide drew; alpha is per labelled example whatever the scale."""
    alpha = 3.0
    m = make(alpha=alpha)
    x, y = data()
    loss = EnumeratedELBO().differentiable_loss(m.model, m.guide, x, y, scale=scale)
    z = m.calls[-1][1]
    assert z.shape == (N, DZ)
    hand = -(scale * log_weight(m, x, y, z).sum() + alpha * log_q_y(m, x, y).sum())
    assert loss.item() == pytest.approx(hand.item(), rel=1e-9)
    # the classifier's gradient comes from the classification term alone
    w = m.classifier[0].weight
    (g,) = torch.autograd.grad(loss, [w])
    (e,) = torch.autograd.grad(-alpha * log_q_y(m, x, y).sum(), [w])
    torch.testing.assert_close(g, e)


@pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")
def test_classification_term_has_weight_alpha():
    x, y = data()
    losses = {}
    for alpha in (0.0, 5.0):
        m = make(alpha=alpha)
        pyro.set_rng_seed(3)  # the same z
        losses[alpha] = EnumeratedELBO().loss(m.model, m.guide, x, y, scale=0.5)
    with torch.no_grad():
        log_q = float(log_q_y(make(), x, y).sum())
    assert losses[5.0] - losses[0.0] == pytest.approx(-5.0 * log_q, rel=1e-9)


def test_unlabelled_scale_multiplies_the_loss():
    m = make()
    x, _ = data()
    pyro.set_rng_seed(2)
    one = EnumeratedELBO().loss(m.model, m.guide, x)
    pyro.set_rng_seed(2)
    assert EnumeratedELBO().loss(m.model, m.guide, x, scale=0.25) == pytest.approx(0.25 * one)


@pytest.mark.parametrize("weight", [0.0, 0.4])
def test_entropy_weight_scales_the_entropy_of_q_y(weight):
    """Unlabelled batches: the loss with entropy weight w is the ELBO's loss plus
    (1 - w) * scale * H(q(y | x)) at the same z; labelled batches are unchanged."""
    x, y = data()
    losses = {}
    for w in (1.0, weight):
        m = make(entropy_weight=w)
        pyro.set_rng_seed(4)  # the same z
        unlabelled = EnumeratedELBO().loss(m.model, m.guide, x, scale=0.5)
        pyro.set_rng_seed(4)
        labelled = EnumeratedELBO().loss(m.model, m.guide, x, y, scale=0.5)
        losses[w] = unlabelled, labelled
    with torch.no_grad():
        lq = torch.log_softmax(make().classifier(x), -1)
        entropy = float(-(lq.exp() * lq).sum())
    assert losses[weight][0] - losses[1.0][0] == pytest.approx(
        0.5 * (1 - weight) * entropy, rel=1e-9
    )
    assert losses[weight][1] == pytest.approx(losses[1.0][1], rel=1e-12)


def flip(x):
    """A deterministic perturbation for the consistency tests: the pixels in reverse order."""
    return x.flip(-1)


def test_consistency_adds_weighted_kl_to_the_perturbed_classifier_on_unlabelled_batches():
    """Unlabelled: loss(w) - loss(0) = w * sum_n KL(q(y|x_n) || q(y|flip(x_n))) from the raw
    classifier, whatever the scale; labelled batches are unchanged."""
    x, y = data()
    losses = {}
    for w in (0.0, 2.5):
        m = make(consistency_weight=w, augment=flip)
        pyro.set_rng_seed(4)
        unlabelled = EnumeratedELBO().loss(m.model, m.guide, x, scale=0.5)
        pyro.set_rng_seed(4)
        labelled = EnumeratedELBO().loss(m.model, m.guide, x, y, scale=0.5)
        losses[w] = unlabelled, labelled
    with torch.no_grad():
        m = make()
        lp, lq = (torch.log_softmax(m.classifier(v), -1) for v in (x, x.flip(-1)))
        kl = float((lp.exp() * (lp - lq)).sum())
    assert kl > 1e-4  # the perturbation changes the classifier's answer
    assert losses[2.5][0] - losses[0.0][0] == pytest.approx(2.5 * kl, rel=1e-9)
    assert losses[2.5][1] == pytest.approx(losses[0.0][1], rel=1e-12)


@pytest.mark.parametrize("threshold, kept", [(0.3, 5), (0.36, 3)])
def test_consistency_threshold_is_the_masked_pseudo_label_loss(threshold, kept):
    """With a threshold: -log q(argmax q(y|x) | flip(x)) for the images whose top probability
    reaches it, 0 for the others (FixMatch), from the raw classifier."""
    x, _ = data()
    m = make(consistency_weight=1.0, augment=flip, consistency_threshold=threshold)
    with torch.no_grad():
        p = torch.softmax(m.classifier(x), -1)
        lq = torch.log_softmax(m.classifier(x.flip(-1)), -1)
    top, label = p.max(-1)
    want = torch.where(top >= threshold, -lq[torch.arange(N), label], torch.zeros(N, dtype=F64))
    got = m.consistency(x)
    assert int((top >= threshold).sum()) == kept  # all kept, or a mixed mask
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-12)


def test_consistency_threshold_out_of_range_names_the_fix():
    with pytest.raises(ValueError, match="pass 0 for the KL or e.g. 0.95"):
        make(consistency_threshold=1.0)


def test_consistency_target_gets_no_gradient():
    """The gradient of the consistency term is that of -w * sum q_fixed * log q(y | flip(x)):
    nothing flows through the target q(y | x)."""
    x, _ = data()
    m = make(consistency_weight=1.0, augment=flip)
    m.consistency(x).sum().backward()
    got = [p.grad.clone() for p in m.classifier.parameters()]
    m.zero_grad()
    with torch.no_grad():
        target = torch.softmax(m.classifier(x), -1)
    (-(target * torch.log_softmax(m.classifier(x.flip(-1)), -1)).sum()).backward()
    for g, want in zip(got, (p.grad for p in m.classifier.parameters())):
        assert torch.allclose(g, want, rtol=1e-10, atol=1e-12)


def test_consistency_without_augment_is_zero_without_dropout():
    """augment=None and no input dropout: the image is its own perturbation, KL 0."""
    x, _ = data()
    m = make(consistency_weight=1.0)
    assert torch.allclose(m.consistency(x), torch.zeros(N, dtype=F64), atol=1e-12)


def test_adversarial_direction_is_one_power_iteration_on_the_kl_hessian():
    """adversarial_direction = epsilon * unit(H d) per image, with d the (unit) random start and
    H the Hessian of KL(q(y | x) || q(y | x + r)) in r at r = 0, computed by autograd."""
    x, _ = data()
    m = make(consistency_weight=1.0, adversarial_epsilon=0.7)
    with torch.no_grad():
        target = torch.log_softmax(m.classifier(x), -1)
    torch.manual_seed(9)
    got = m.adversarial_direction(x, target)
    torch.manual_seed(9)
    d = torch.randn_like(x)
    for n in range(N):

        def kl(r, n=n):
            log_q = torch.log_softmax(m.classifier(x[n] + r), -1)
            return (target[n].exp() * (target[n] - log_q)).sum()

        hessian = torch.autograd.functional.hessian(kl, torch.zeros(DX, dtype=F64))
        hd = hessian @ (d[n] / d[n].norm())
        assert torch.allclose(got[n], 0.7 * hd / hd.norm(), rtol=1e-4, atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.full((N,), 0.7, dtype=F64))


def test_adversarial_consistency_trains_and_works_under_no_grad():
    """The consistency loss with an adversarial step is finite, differentiable, and computable
    in evaluation code under torch.no_grad (the direction enables grad for itself)."""
    x, _ = data()
    m = make(consistency_weight=2.0, adversarial_epsilon=0.5, augment=flip)
    with torch.no_grad():
        value = m.consistency(x)
    assert value.shape == (N,) and bool((value > 0).all())
    loss = EnumeratedELBO().differentiable_loss(m.model, m.guide, x)
    loss.backward()
    assert all(p.grad is not None for p in m.classifier.parameters())


def test_elbo_per_class_is_the_labelled_elbo_of_each_class():
    """Column c of elbo_per_class, summed over the batch, is the ELBO of the batch labelled c
    (Monte Carlo over z on both sides)."""
    m = make(alpha=0.0, cls=SemiSupervisedVAE)
    x, _ = data()
    torch.manual_seed(5)
    per_class = m.elbo_per_class(x, num_samples=20_000)
    assert per_class.shape == (N, C)
    elbo = Trace_ELBO(num_particles=20_000, vectorize_particles=True, max_plate_nesting=1)
    for c in range(C):
        y = F.one_hot(torch.full((N,), c), C).to(F64)
        with torch.no_grad():
            ref = -elbo.loss(m.model, m.guide, x, y)
        assert float(per_class[:, c].sum()) == pytest.approx(ref, abs=0.05)
    torch.manual_seed(6)
    expected = m.elbo_per_class(x, 3).argmax(-1)
    torch.manual_seed(6)
    assert torch.equal(m.generative_classify(x, 3), expected)


@pytest.mark.filterwarnings("ignore:y")  # the enumerate annotation, unused when relaxed
def test_gumbel_softmax_elbo_trains_both_batches():
    m = make(cls=SemiSupervisedVAE)
    x, y = data()
    elbo = GumbelSoftmaxELBO(temperature=0.5, kl="analytic", max_plate_nesting=1)
    svi = TorchOptimSVI(m.model, m.guide, lambda ps: torch.optim.Adam(ps, lr=1e-2), elbo)
    before = m.classifier[0].weight.detach().clone()
    losses = [svi.step(x), svi.step(x, y, scale=0.1)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert not torch.equal(before, m.classifier[0].weight)


# ------------------------------------------------------------ training ------------------------
def test_semi_supervised_training_on_separable_data():
    """Three classes, each lighting its own block of pixels; two labels per class and 300
    unlabelled images: the classifier reaches >= 95% on held-out images."""
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    classes, dim = 3, 18

    def sample(n):
        labels = torch.randint(classes, (n,))
        probs = torch.full((n, dim), 0.1)
        for c in range(classes):
            probs[labels == c, c * 6 : (c + 1) * 6] = 0.9
        return torch.bernoulli(probs), labels

    x_u, _ = sample(300)
    x_test, labels_test = sample(300)
    x_l, labels_l = sample(30)
    keep = torch.cat([torch.nonzero(labels_l == c).flatten()[:2] for c in range(classes)])
    x_l, y_l = x_l[keep], F.one_hot(labels_l[keep], classes).float()
    m = SemiSupervisedVAE(dim, classes, z_dim=2, hidden=16, alpha=5.0)
    svi = TorchOptimSVI(
        m.model, m.guide, lambda ps: torch.optim.Adam(ps, lr=2e-2), EnumeratedELBO()
    )
    for step in range(40):
        i = (step * 100) % 300
        svi.step(x_u[i : i + 100])
        svi.step(x_l, y_l, scale=len(x_l) / 300)
    assert m.accuracy(x_test, labels_test) >= 0.95
