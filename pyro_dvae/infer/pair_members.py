"""Every member of DisARM's antithetic pairs drawn in one vectorized run of the guide.

:class:`~pyro_dvae.infer.DisARMELBO` compares the sample ELBO of a base draw with that of
antithetic members. Instead of one guide and one model run per member, the
:class:`PairMembersMessenger` lays the members side by side in a particle plate left of the
model's plates and draws each site's values for all of them at once, so that the encoder runs
once and the model once per step.
"""

from __future__ import annotations

import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import Distribution

from ..errors import DVAEInputError
from .antithetic import (
    antithetic_uniforms,
    bernoulli_logits,
    categorical_logits,
    draw_from_uniforms,
)

__all__ = ["PairMembersMessenger"]


class PairMembersMessenger(Messenger):
    """Draws ``pairs`` base draws and their antithetic members in one run of the guide.

    Use it outside a particle plate of size ``(1 + len(members)) * pairs`` at dim ``-width``
    (so that the sites' distributions arrive broadcast over it): particles ``[0, pairs)`` are
    the base draws, particles ``[j * pairs, (j + 1) * pairs)`` member ``j`` (from 1). Member
    ``j`` is ``(copied, flipped)``: it takes the base draws' values at the guide's first
    ``copied`` latent sites, the antithetic values (uniforms ``1 - u`` where the base draw used
    ``u``) at the Bernoulli sites and, with ``categorical`` set, the stick-breaking units of the
    categorical sites named in ``flipped`` (``None``: every such site), and fresh draws at every
    other site. DisARM's joint pair is ``[(0, None)]``; its sequential pairs are ``[(i_m,
    {m}) for each discrete site m at position i_m]``. ``order`` is the guide's latent sites
    in execution order, checked as the run goes. The base draws' uniforms are kept in
    ``noise``.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def guide():
        ...     pyro.sample("b", dist.Bernoulli(logits=torch.zeros(5)).to_event(1))
        >>> draw = PairMembersMessenger(2, 1, False, [(0, None)], ["b"])
        >>> trace = pyro.poutine.trace(draw(pyro.plate("members", 4, dim=-1)(guide))).get_trace()
        >>> b = trace.nodes["b"]["value"]  # [4, 5]: two base draws, then their complements
        >>> bool((b[2:] == 1 - b[:2]).all())
        True
    """

    def __init__(
        self,
        pairs: int,
        width: int,
        categorical: bool,
        members: list[tuple[int, frozenset[str] | None]],
        order: list[str],
    ) -> None:
        super().__init__()
        self.pairs = pairs
        self.width = width
        self.categorical = categorical
        self.members = members
        self.order = order
        self.noise: dict[str, torch.Tensor] = {}
        self._position = 0

    def chunks(self, fn: Distribution, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``x`` (a value or parameter of a site with distribution ``fn``, batch dims first)
        split into the base draws' part and each member's."""
        return x.split(self.pairs, len(fn.batch_shape) - self.width)

    def _pyro_sample(self, msg: dict) -> None:
        if msg["is_observed"] or isinstance(msg["fn"], _Subsample) or msg["done"]:
            return
        name, fn, position = msg["name"], msg["fn"], self._position
        self._position += 1
        if position >= len(self.order) or self.order[position] != name:
            raise DVAEInputError(
                f"guide site '{name}' comes where the first run of the guide had "
                f"{self.order[position] if position < len(self.order) else 'no site'!r}; "
                "vectorized DisARM pairs need the same latent sites in the same order every "
                "step: pass vectorize_pairs=False"
            )
        logits = bernoulli_logits(fn)
        cat = None if logits is not None or not self.categorical else categorical_logits(fn)
        pairable = logits is not None or cat is not None
        one_hot = None if cat is None else cat[1]
        if not pairable and all(copied <= position for copied, _ in self.members):
            return  # a fresh draw for every member: Pyro samples it as written
        axis = len(fn.batch_shape) - self.width
        values = list(self.chunks(fn, fn(*msg["args"], **msg["kwargs"])))
        if pairable:
            params = self.chunks(fn, logits if cat is None else cat[0])
            u = antithetic_uniforms(params[0], bernoulli=cat is None)
            self.noise[name] = u
            values[0] = draw_from_uniforms(params[0], u, one_hot)
        for j, (copied, flipped) in enumerate(self.members, 1):
            if position < copied:
                values[j] = values[0]
            elif pairable and (flipped is None or name in flipped):
                if copied == 0 and not torch.equal(params[j], params[0]):
                    raise DVAEInputError(
                        f"guide site '{name}' changes with the other guide sites' draws, so "
                        "DisARM's joint antithetic pair does not apply; use "
                        "coupling='sequential' (or 'auto')"
                    )
                values[j] = draw_from_uniforms(params[j], 1.0 - u, one_hot)
        msg["value"] = torch.cat(values, axis)
        msg["done"] = True
