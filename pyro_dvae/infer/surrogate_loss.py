"""``loss`` and ``loss_and_grads`` of an ELBO that defines ``differentiable_loss``: a tensor whose
value is the loss and whose gradient is the estimator's (a surrogate)."""

from __future__ import annotations

import torch
from pyro.infer.util import torch_item
from pyro.util import warn_if_nan

__all__ = ["SurrogateLossMixin"]


class SurrogateLossMixin:
    """Derives Pyro's ``loss`` and ``loss_and_grads`` from ``differentiable_loss``.

    Put it before :class:`~pyro.infer.ELBO` in the bases; override ``loss`` where the loss alone
    is cheaper than the surrogate.

    Example:
        >>> from pyro.infer import ELBO
        >>> class Constant(SurrogateLossMixin, ELBO):
        ...     def _get_trace(self, model, guide, args, kwargs):
        ...         raise NotImplementedError
        ...     def differentiable_loss(self, model, guide, *args, **kwargs):
        ...         return torch.tensor(2.0)
        >>> Constant().loss_and_grads(None, None)
        2.0
    """

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The estimate of ``-ELBO``, summed over the data, without gradients."""
        with torch.no_grad():
            loss = torch_item(self.differentiable_loss(model, guide, *args, **kwargs))
        warn_if_nan(loss, "loss")
        return loss

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss, with the estimator's gradients accumulated into ``.grad``."""
        surrogate = self.differentiable_loss(model, guide, *args, **kwargs)
        if surrogate.requires_grad:
            surrogate.backward(retain_graph=self.retain_graph)
        loss = torch_item(surrogate)
        warn_if_nan(loss, "loss")
        return loss
