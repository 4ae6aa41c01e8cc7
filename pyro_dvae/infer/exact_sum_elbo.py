"""The base of the ELBOs that sum discrete sites exactly instead of sampling them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from typing import NamedTuple

import torch
from pyro.infer import ELBO
from pyro.infer.traceenum_elbo import _compute_dice_elbo
from pyro.infer.util import torch_item
from pyro.poutine import scale as scale_handler
from pyro.util import warn_if_nan

from ..errors import DVAEInputError
from .structured_enumeration import (
    DEFAULT_MAX_CONFIGURATIONS,
    StructuredEnumeration,
    drop_global_costs,
)

__all__ = ["ExactSumELBO", "LossTerm"]


class LossTerm(NamedTuple):
    """A piece of an :class:`ExactSumELBO`'s loss: ``value`` adds to the loss, ``surrogate``
    (``None``: no gradient) to its gradient; ``retain_graph`` where later pieces share its graph
    (a continuous draw replayed in every block)."""

    value: torch.Tensor | float
    surrogate: torch.Tensor | None = None
    retain_graph: bool = False


class ExactSumELBO(ELBO):
    """Shared plumbing of :class:`~pyro_dvae.infer.EnumeratedELBO` and
    :class:`~pyro_dvae.infer.ExactMarginalELBO`: a Pyro :class:`~pyro.infer.ELBO` (so
    ``elbo(model, guide)`` is Pyro's ``ELBOModule``) that draws no traces but walks a
    :class:`~pyro_dvae.infer.StructuredEnumeration` block by block.

    A subclass yields its loss in pieces (:class:`LossTerm`) from :meth:`_loss_terms`: the loss
    is the sum of their values and its gradient the sum of their surrogates'. The
    pieces are streamed, so :meth:`loss_and_grads` back-propagates each block and frees its
    graph before the next is built (peak memory follows the block, not the whole sum);
    :meth:`differentiable_loss` sums them into one tensor. Override ``loss`` or
    ``differentiable_loss`` where a cheaper or different form applies.

    :param num_particles: draws of the continuous sites per step (averaged).
    :param max_configurations: refuse coupled discrete sites with more joint configurations.
    :param chunk_size: configurations per block (default: chosen from a memory budget).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> class NegativeDiceELBO(ExactSumELBO):  # EnumeratedELBO, in three lines
        ...     def _loss_terms(self, model, guide, args, kwargs):
        ...         for elbo in self._dice_elbos(self._space(model, guide, args, kwargs)):
        ...             yield LossTerm(-elbo, -elbo)
        >>> def model():
        ...     pyro.sample("z", dist.Bernoulli(0.5))
        >>> def guide():
        ...     pyro.sample("z", dist.Bernoulli(0.5))
        >>> NegativeDiceELBO().loss(model, guide)  # KL(q || p) = 0
        0.0
    """

    def __init__(
        self,
        num_particles: int = 1,
        max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
        chunk_size: int | None = None,
    ) -> None:
        if num_particles < 1:
            raise DVAEInputError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(num_particles=num_particles)
        self.max_configurations = max_configurations
        self.chunk_size = chunk_size

    def _space(self, model, guide, args, kwargs, **options) -> StructuredEnumeration:
        """The enumeration of ``model`` and ``guide`` with this ELBO's limits (``options``:
        ``guide_side``, ``single_pass``, ...)."""
        return StructuredEnumeration(
            model,
            guide,
            args,
            kwargs,
            max_configurations=self.max_configurations,
            chunk_size=self.chunk_size,
            **options,
        )

    def _dice_elbos(self, space: StructuredEnumeration, weight: torch.Tensor | None = None):
        """Each block's ELBO, for each of ``num_particles`` draws: Pyro's ``TraceEnum_ELBO``
        computation (tensor variable elimination and the Dice expectation) on the block's
        enumerated traces, drawn under ``poutine.scale(weight)`` if given. Costs outside the
        data plate count in the first block only."""
        for _ in range(self.num_particles):
            for i, block in enumerate(space.blocks):
                with nullcontext() if weight is None else scale_handler(scale=weight):
                    traces = space.traces(block)
                if i:
                    drop_global_costs(*traces, space.data_frames)
                yield torch.as_tensor(_compute_dice_elbo(*traces))

    def _loss_terms(self, model, guide, args, kwargs) -> Iterator[LossTerm]:
        """The loss in pieces, each block's built only when the previous one is consumed."""
        raise NotImplementedError(f"{type(self).__name__} must yield its loss terms")

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(
            f"{type(self).__name__} sums over configurations; it draws no traces"
        )

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The loss, summed over the data, without gradients."""
        with torch.no_grad():
            terms = self._loss_terms(model, guide, args, kwargs)
            loss = sum(torch_item(term.value) for term in terms)
        warn_if_nan(loss, "loss")
        return loss

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """The loss as a differentiable tensor (holds every block's graph)."""
        return sum(term.surrogate for term in self._loss_terms(model, guide, args, kwargs))

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """The loss, with its gradient accumulated into ``.grad`` block by block."""
        loss = 0.0
        for value, surrogate, retain in self._loss_terms(model, guide, args, kwargs):
            if surrogate is not None and surrogate.requires_grad:
                surrogate.backward(retain_graph=retain or self.retain_graph)
            loss += torch_item(value)
        warn_if_nan(loss, "loss")
        return loss
