"""SurrogateLossMixin: loss is the surrogate's value, loss_and_grads its gradient."""

from __future__ import annotations

import torch
from pyro.infer import ELBO

from pyro_dvae.infer.surrogate_loss import SurrogateLossMixin


class Quadratic(SurrogateLossMixin, ELBO):
    """Value w^2, gradient 3 w (a surrogate whose gradient differs from its value's)."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError

    def differentiable_loss(self, model, guide, *args, **kwargs):
        w = self.w
        value, surrogate = (w**2).sum(), 1.5 * (w**2).sum()
        return surrogate + (value - surrogate).detach()


def test_loss_is_the_value_and_gradient_the_surrogates():
    w = torch.tensor([1.0, -2.0], requires_grad=True)
    elbo = Quadratic(w)
    assert elbo.loss(None, None) == 5.0
    assert w.grad is None  # loss takes no gradient
    assert elbo.loss_and_grads(None, None) == 5.0
    torch.testing.assert_close(w.grad, 3.0 * w.detach())
