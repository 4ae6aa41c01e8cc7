"""SVI driven by one ``torch.optim`` optimizer over all parameters, with Pyro's ELBO machinery.

:class:`pyro.infer.SVI` wraps every parameter in its own PyTorch optimizer (``pyro.optim``
keeps one per parameter), which costs a Python round trip per parameter per step. For the
networks of a VAE that overhead is a large share of a step on CPU (measured in
``benchmarks/bench_step.py``). :class:`TorchOptimSVI` keeps Pyro's semantics (the ELBO's
``loss_and_grads`` computes the loss and gradients; every ``pyro.param`` seen during a step is
optimized, in its unconstrained form) but steps a single ``torch.optim`` optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.poutine as poutine
import torch
from pyro.infer import ELBO

from ..errors import DVAEInputError

__all__ = ["TorchOptimSVI"]


class TorchOptimSVI:
    """Stochastic variational inference with one ``torch.optim`` optimizer.

    :param model: Pyro model.
    :param guide: Pyro guide.
    :param optim_factory: called once with the list of unconstrained parameters found on the
        first step, returns a ``torch.optim.Optimizer`` (e.g. ``lambda ps: torch.optim.Adam(ps)``).
        Parameters that first appear on a later step are added as a new parameter group.
    :param loss: a Pyro :class:`~pyro.infer.ELBO` (any of this package's, or Pyro's own).

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def model(x):
        ...     loc = pyro.param("loc", torch.tensor(0.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(loc, 1.0), obs=x)
        >>> def guide(x):
        ...     pass
        >>> svi = TorchOptimSVI(model, guide, lambda ps: torch.optim.Adam(ps, lr=0.1),
        ...                     pyro.infer.Trace_ELBO())
        >>> for _ in range(200):
        ...     _ = svi.step(torch.full((10,), 3.0))
        >>> round(pyro.param("loc").item(), 1)
        3.0
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim_factory: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
        loss: ELBO,
    ) -> None:
        if not hasattr(loss, "loss_and_grads"):
            raise DVAEInputError(
                f"loss must be a Pyro ELBO with loss_and_grads, got {type(loss).__name__}"
            )
        self.model, self.guide, self.loss = model, guide, loss
        self._optim_factory = optim_factory
        self.optimizer: torch.optim.Optimizer | None = None
        self._known: set[int] = set()

    def _sync_params(self, trace: poutine.Trace) -> None:
        params = [
            site["value"].unconstrained()
            for site in trace.nodes.values()
            if site["type"] == "param"
        ]
        new = []
        for p in params:
            if id(p) not in self._known:
                self._known.add(id(p))
                new.append(p)
        if not new:
            return
        if self.optimizer is None:
            self.optimizer = self._optim_factory(new)
        else:
            self.optimizer.add_param_group({"params": new})

    def step(self, *args, **kwargs) -> float:
        """One gradient step on the ELBO; returns the loss (negative ELBO estimate)."""
        with poutine.trace(param_only=True) as param_capture:
            loss = self.loss.loss_and_grads(self.model, self.guide, *args, **kwargs)
        self._sync_params(param_capture.trace)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss)

    def evaluate_loss(self, *args, **kwargs) -> float:
        """The loss without taking a step."""
        with torch.no_grad():
            return float(self.loss.loss(self.model, self.guide, *args, **kwargs))

    def state_dict(self) -> dict:
        """The optimizer's state (for checkpoints)."""
        return {} if self.optimizer is None else self.optimizer.state_dict()
