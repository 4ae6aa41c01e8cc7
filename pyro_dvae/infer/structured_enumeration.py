"""Exact sums over a model's discrete sites that follow its structure (one engine for every
exact objective).

Each discrete latent site is enumerated with Pyro's own parallel enumeration
(:class:`~pyro.poutine.enum_messenger.EnumMessenger`) and the resulting factors are summed out
by Pyro's tensor variable elimination (:func:`pyro.ops.contract.contract_to_tensor`, the
contraction behind ``TraceEnum_ELBO``), so that

- a site local to a plate (inside a nested ``pyro.plate``) is summed per plate element: cost
  linear in the plate size;
- a ``pyro.markov`` chain is summed by variable elimination: cost linear in its length, S^2
  per step for S states;
- a continuous site is sampled from the guide (reparameterized) once per enumerated
  configuration of the discrete sites upstream of it;
- the *coupled group*, the discrete sites that sit directly in the data plates outside any
  ``pyro.markov`` context (those a decoder may couple, as in a VAE), is enumerated jointly.
  A site with several discrete units in its event (``.to_event``: a VAE's N one-hot groups or
  N Bernoulli units, which Pyro itself cannot enumerate) gets its K^N joint configurations.
  When the group's joint size exceeds the chunk size (from a memory budget), it is walked in
  *blocks*: each site's support is restricted to a slice, and the blocks' results are added
  (guide-side sums, which are expectations) or log-sum-exp'ed (model-side sums), so that peak
  memory follows the block size, not K^N.

Reference: Obermeyer et al., Tensor Variable Elimination for Plated Factor Graphs, ICML 2019,
arXiv:1902.03210.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyro.poutine as poutine
import torch
from pyro.distributions import Independent, TorchDistribution
from pyro.distributions.torch_distribution import ExpandedDistribution, MaskedDistribution
from pyro.infer.enum import get_importance_trace
from pyro.infer.traceenum_elbo import _compute_model_factors
from pyro.ops.contract import contract_to_tensor
from pyro.ops.rings import LogRing
from pyro.poutine.enum_messenger import EnumMessenger
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from pyro.util import get_rng_state, set_rng_state
from torch.distributions import Distribution

from ..errors import DVAEInputError, LatentSpaceTooLargeError
from .broadcasting import BroadcastingMessenger
from .util import callable_key, shape_failure

__all__ = ["StructuredEnumeration"]

DEFAULT_MAX_CONFIGURATIONS = 2**20
DEFAULT_MEMORY_BUDGET = 256 * 2**20  # bytes per block for the largest per-block tensors
# the single enumerated pass (no analysis pass) is tried for models whose non-Markov discrete
# sites have at most this many joint configurations, and whose plate nesting is known from an
# earlier call (enumerated values get the dims Pyro's own enumeration would give them)
SINGLE_PASS_MAX_CONFIGURATIONS = 4096
_NESTING_CACHE: OrderedDict = OrderedDict()  # (model, guide) key -> max plate nesting
_NESTING_CACHE_SIZE = 64


def leaf_distribution(fn: Distribution) -> Distribution:
    """The distribution under any ``Independent``, ``Expanded`` or ``Masked`` wrappers."""
    while isinstance(fn, (Independent, ExpandedDistribution, MaskedDistribution)):
        fn = fn.base_dist
    return fn


def _is_discrete(fn: Distribution) -> bool:
    return bool(getattr(leaf_distribution(fn), "has_enumerate_support", False))


class _BlockSupport(TorchDistribution):
    """A site's distribution whose enumeration yields one block of its joint configurations.

    ``support`` has shape ``[C, *(1,) * len(batch_shape), *event_shape]``. Densities are the
    wrapped distribution's, so a block of the support is summed with its true weights.
    """

    has_enumerate_support = True

    def __init__(self, base: Distribution, support: torch.Tensor) -> None:
        self.base = base
        self.block = support
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base.support

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        if expand:
            shape = (self.block.shape[0],) + tuple(self.batch_shape) + tuple(self.event_shape)
            return self.block.expand(shape)
        return self.block

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.base.log_prob(value)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self.base.sample(sample_shape)


@dataclass
class _CoupledSite:
    """A discrete site of the coupled group: its joint support is indexed 0..size-1."""

    name: str
    leaf_support: torch.Tensor  # [K, *leaf_event_shape]
    units_shape: tuple[int, ...]  # event dims reinterpreted from the leaf's batch (N groups)

    @property
    def num_categories(self) -> int:
        return self.leaf_support.shape[0]

    @property
    def num_units(self) -> int:
        return math.prod(self.units_shape)

    @property
    def size(self) -> int:
        return self.num_categories**self.num_units

    @property
    def needs_joint_support(self) -> bool:
        return len(self.units_shape) > 0  # Pyro cannot enumerate reinterpreted batch dims

    def values(self, start: int, stop: int, batch_ndim: int) -> torch.Tensor:
        """Configurations ``start..stop-1``, shaped for ``enumerate_support(expand=False)`` of
        a distribution with ``batch_ndim`` batch dims."""
        k, m = self.num_categories, self.num_units
        index = torch.arange(start, stop)
        powers = k ** torch.arange(m - 1, -1, -1)
        digits = (index.unsqueeze(-1) // powers) % k  # [C, M], last unit varies fastest
        value = self.leaf_support[digits.to(self.leaf_support.device)]
        leaf_event = tuple(self.leaf_support.shape[1:])
        shape = (stop - start,) + (1,) * batch_ndim + self.units_shape + leaf_event
        return value.reshape(shape)


@dataclass
class _Block:
    """One block of the coupled group: ``site -> (start, stop)`` slices of joint supports."""

    slices: dict[str, tuple[int, int]] = field(default_factory=dict)


class _EnumerateDiscrete(Messenger):
    """Marks every discrete, unobserved sample site of ``names`` for parallel enumeration and
    restricts the coupled sites to the current block's slice of their joint support."""

    def __init__(self, names: set[str], coupled: dict[str, _CoupledSite], block: _Block) -> None:
        super().__init__()
        self.names = names
        self.coupled = coupled
        self.block = block

    def _pyro_sample(self, msg) -> None:
        name = msg["name"]
        if msg["is_observed"] or name not in self.names:
            return
        msg["infer"] = dict(msg["infer"] or {}, enumerate="parallel")
        site = self.coupled.get(name)
        if site is None:
            return
        start, stop = self.block.slices.get(name, (0, site.size))
        if site.needs_joint_support or (start, stop) != (0, site.size):
            fn = msg["fn"]
            msg["fn"] = _BlockSupport(fn, site.values(start, stop, len(fn.batch_shape)))


class _NotSinglePass(Exception):
    """The single enumerated pass does not apply: use the analysis pass."""


class _EnumerateEveryDiscrete(Messenger):
    """Marks every unobserved discrete site (not in ``skip``) for Pyro's parallel enumeration,
    for the single pass; ``record`` collects every sample site's name (the guide's, so that
    the model skips them: they are replayed).

    Raises :class:`_NotSinglePass` at a site that needs the engine's own joint support (a
    ``.to_event`` group), or inside plates nested deeper than the pass assumed, or when the
    non-Markov sites' joint size could exceed one block; and at any discrete site when
    ``enumerate`` is False (a model-side sum whose guide has discrete sites).
    """

    def __init__(
        self, nesting: int, skip=(), record: set | None = None, enumerate: bool = True
    ) -> None:
        super().__init__()
        self.nesting = nesting
        self.skip = skip
        self.record = record
        self.enumerate = enumerate
        self.joint_size = 1

    def _pyro_sample(self, msg) -> None:
        if self.record is not None:
            self.record.add(msg["name"])
        if any(f.dim is not None and f.dim < -self.nesting for f in msg["cond_indep_stack"]):
            raise _NotSinglePass
        fn = msg["fn"]
        if msg["is_observed"] or msg["name"] in self.skip or not _is_discrete(fn):
            return
        if not self.enumerate:
            raise _NotSinglePass
        leaf = leaf_distribution(fn)
        if len(fn.event_shape) != len(leaf.event_shape):
            raise _NotSinglePass
        if msg["infer"].get("_markov_scope") is None:
            self.joint_size *= leaf.enumerate_support(expand=False).shape[0]
            if self.joint_size > SINGLE_PASS_MAX_CONFIGURATIONS:
                raise _NotSinglePass
        msg["infer"] = dict(msg["infer"] or {}, enumerate="parallel")


class _FirstSupportValue(Messenger):
    """Gives every unobserved discrete site the first value of its support instead of a draw.

    The analysis pass reads a model's structure (sites, plates, distributions), not its
    values; a valid value costs nothing while a draw of every plate-local latent costs as much
    as the sum itself (``torch.multinomial`` over 78,400 pixels).
    """

    def _pyro_sample(self, msg) -> None:
        if msg["is_observed"] or msg["value"] is not None or not _is_discrete(msg["fn"]):
            return
        fn = msg["fn"]
        try:
            first = leaf_distribution(fn).enumerate_support(expand=False)[0]
        except NotImplementedError:
            return
        msg["value"] = first.expand(fn.shape()).contiguous()  # a model may .view() it


def _plates(site: dict) -> frozenset:
    return frozenset(
        (f.name, f.dim, f.size) for f in site["cond_indep_stack"] if f.vectorized and f.dim
    )


def summarize_sizes(sizes: list[tuple[int, int]]) -> str:
    """``[(K, M), ...]`` as ``"3^30 x 8^5 = 1.1e+19"``, repeated bases combined."""
    exponents: Counter = Counter()
    for k, m in sizes:
        exponents[k] += m
    total = math.prod(k**m for k, m in exponents.items())
    parts = " x ".join(f"{k}^{m}" for k, m in sorted(exponents.items()))
    return f"{parts} = {float(total):.3g}"


class StructuredEnumeration:
    """The discrete sites of a model (and guide) and how they are summed exactly.

    :param model, guide: Pyro functions (``guide=None``: sum every discrete site in the model).
    :param args, kwargs: their arguments (the data).
    :param guide_side: enumerate the guide's discrete sites in the guide (an expectation under
        q, as ``EnumeratedELBO``); else every discrete model site is summed in the model (its
        marginal likelihood, as ``ExactMarginalELBO``) and the guide may only sample
        continuous sites.
    :param max_configurations: refuse a coupled group with more joint configurations.
    :param chunk_size: configurations per block of the coupled group (default: from a
        memory budget of 256 MB for the per-block tensors).
    :param single_pass: try to read the structure off the first enumerated pass (kept for the
        first ``traces`` call) instead of a separate analysis pass. Pass False when the
        traces will be drawn with ``guide_trace=`` (a draw of the caller's own), since the
        single pass draws the guide's continuous sites from the global RNG.

    Example:
        >>> import pyro, pyro.distributions as dist
        >>> def hmm(x):
        ...     z = 0
        ...     for t in pyro.markov(range(len(x))):
        ...         p = torch.tensor([[0.9, 0.1], [0.2, 0.8]])[z]
        ...         z = pyro.sample(f"z{t}", dist.Categorical(p))
        ...         pyro.sample(f"x{t}", dist.Normal(z * 1.0, 1.0), obs=x[t])
        >>> space = StructuredEnumeration(hmm, args=(torch.zeros(50),))
        >>> space.log_marginal().shape
        torch.Size([1])
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable | None = None,
        args: tuple = (),
        kwargs: dict | None = None,
        *,
        guide_side: bool = True,
        max_configurations: int = DEFAULT_MAX_CONFIGURATIONS,
        chunk_size: int | None = None,
        single_pass: bool = True,
    ) -> None:
        self.model = model
        self.guide = guide
        self.args = args
        self.kwargs = kwargs or {}
        self.guide_side = guide_side
        self._pending = None
        key = (callable_key(model), callable_key(guide), guide_side)
        nesting = _NESTING_CACHE.get(key) if single_pass else None
        if nesting is None or not self._single_pass(max_configurations, chunk_size, nesting):
            self._analyse(max_configurations, chunk_size)
        _NESTING_CACHE[key] = self.max_plate_nesting
        _NESTING_CACHE.move_to_end(key)
        while len(_NESTING_CACHE) > _NESTING_CACHE_SIZE:
            _NESTING_CACHE.popitem(last=False)

    # ---------------------------------------------------------------- analysis ----------
    def _single_pass(self, max_configurations: int, chunk_size: int | None, nesting: int) -> bool:
        """Enumerate every discrete site the way Pyro does, in one pass, and read the
        structure off the enumerated traces; kept for the first :meth:`traces` call when the
        plan turns out to be that single block (no ``.to_event`` group, a small coupled
        group), so that no separate analysis pass is paid. ``nesting``: the plate nesting
        seen by the last call on the same model and guide (it places the enumerated dims;
        a model that now nests differently falls back). Any other outcome (or any error,
        which the analysis pass then reports properly) rolls the RNG back and returns False.
        """
        state = get_rng_state()
        guide_names: set[str] = set()
        guide_marker = _EnumerateEveryDiscrete(
            nesting, record=guide_names, enumerate=self.guide_side
        )
        model_marker = _EnumerateEveryDiscrete(nesting, skip=guide_names)
        try:
            model_trace, guide_trace = self._enumerated_traces(model_marker, guide_marker, nesting)
        except Exception:  # noqa: BLE001 - any failure: the analysis pass decides
            set_rng_state(state)
            return False
        self._describe(model_trace, guide_trace if self.guide else None, max_configurations)
        self.blocks_size = self._block_capacity(model_trace, chunk_size)
        self._plan_blocks()
        if self.max_plate_nesting != nesting or self.num_blocks != 1:
            set_rng_state(state)
            return False
        guide_trace.pack_tensors()
        model_trace.pack_tensors(guide_trace.plate_to_symbol)
        self._pending = (self.blocks[0], model_trace, guide_trace)
        return True

    def _analyse(self, max_configurations: int, chunk_size: int | None) -> None:
        """A pass without enumeration that reads the sites, plates and distributions.

        It draws nothing from the global RNG (equal seeds give equal draws to this engine and
        to Pyro's TraceEnum_ELBO) and samples no discrete site (their values only need to be
        valid: the structure is read, not the values).
        """
        model, guide, args = self.model, self.guide, self.args
        with torch.no_grad(), poutine.block(hide_types=["param"]), _saved_rng():
            guide_fn = _FirstSupportValue()(BroadcastingMessenger()(guide)) if guide else None
            guide_trace = poutine.trace(guide_fn).get_trace(*args, **self.kwargs) if guide else None
            model_fn = BroadcastingMessenger()(model)
            replayed = poutine.replay(model_fn, trace=guide_trace) if guide else model_fn
            model_trace = poutine.trace(_FirstSupportValue()(replayed)).get_trace(
                *args, **self.kwargs
            )
        self._describe(model_trace, guide_trace, max_configurations)
        self.blocks_size = self._block_capacity(model_trace, chunk_size)
        self._plan_blocks()

    # ---------------------------------------------------------------- analysis ----------
    def _describe(self, model_trace, guide_trace, max_configurations: int) -> None:
        model_sites = [s for s in model_trace.nodes.values() if _is_sample(s)]
        guide_sites = (
            [s for s in guide_trace.nodes.values() if _is_sample(s)] if guide_trace else []
        )
        guide_latent = {s["name"]: s for s in guide_sites if not s["is_observed"]}
        self._find_plates(model_sites, guide_sites)
        self._classify_sites(model_sites, guide_latent, model_trace)
        self._find_coupled(model_trace, guide_trace, max_configurations)
        self._floats_per_config = 1024 + sum(
            _floats_per_config(s) for s in model_sites if s["is_observed"]
        )

    def _find_plates(self, model_sites: list, guide_sites: list) -> None:
        """Plate nesting, the data plate (the outermost plate holding every site: a datum is
        one of its elements; plates nested inside it are summed within the datum), and whether
        it is subsampled."""
        self.max_plate_nesting = max(
            (
                -f.dim
                for site in model_sites + guide_sites
                for f in site["cond_indep_stack"]
                if f.vectorized and f.dim is not None
            ),
            default=0,
        )
        frames = [_plates(s) for s in model_sites]
        common = sorted(frozenset.intersection(*frames) if frames else (), key=_dim)
        self.data_frames = common[:1]
        data = set(self.data_frames)
        self.subsampled = any(
            f.full_size not in (None, f.size)
            for s in model_sites
            for f in s["cond_indep_stack"]
            if f.vectorized and (f.name, f.dim, f.size) in data
        )

    def _classify_sites(self, model_sites: list, guide_latent: dict, model_trace) -> None:
        """Each latent model site: summed in the guide, summed in the model, or continuous
        (sampled from the guide); one-line errors for what no exact objective can do."""
        self.guide_enumerated: set[str] = set()
        self.model_enumerated: set[str] = set()
        self.continuous: set[str] = set()
        for site in model_sites:
            name = site["name"]
            if site["is_observed"]:
                continue
            in_guide = name in guide_latent
            discrete = _is_discrete(site["fn"])
            if in_guide and discrete != _is_discrete(guide_latent[name]["fn"]):
                raise DVAEInputError(
                    f"site '{name}' is discrete in one of model and guide and continuous in the "
                    "other; give it the same kind of distribution in both"
                )
            if not discrete and not in_guide:
                kind = type(leaf_distribution(site["fn"])).__name__
                raise DVAEInputError(
                    f"latent site '{name}' has a {kind} "
                    "distribution, which cannot be summed exactly, and no guide site; add "
                    f"q({name} | x) to the guide (it is then sampled) or make '{name}' discrete"
                )
            if not discrete:
                self.continuous.add(name)
            elif in_guide and self.guide_side:
                self.guide_enumerated.add(name)
            else:
                self.model_enumerated.add(name)
        for name, site in guide_latent.items():
            if name not in model_trace.nodes:
                continue
            if not self.guide_side and name in self.model_enumerated and self.continuous:
                raise DVAEInputError(
                    f"guide site '{name}' is discrete but this objective sums the model's "
                    "discrete sites in the model; remove it from the guide (keep q of the "
                    "continuous sites only) or sum it in the guide with EnumeratedELBO"
                )
            if name in self.continuous and not site["fn"].has_rsample:
                raise DVAEInputError(
                    f"guide site '{name}' ({type(leaf_distribution(site['fn'])).__name__}) has no "
                    "reparameterized sampler; exact objectives sample continuous sites by "
                    "rsample: use a reparameterizable distribution such as Normal"
                )
        self.guide_has_discrete = any(_is_discrete(s["fn"]) for s in guide_latent.values())

    def _find_coupled(self, model_trace, guide_trace, max_configurations: int) -> None:
        """The coupled group: discrete sites directly in the data plate, outside pyro.markov
        (and any ``.to_event`` group, which Pyro cannot enumerate), in the order they run."""
        data = set(self.data_frames)
        self.coupled: dict[str, _CoupledSite] = {}
        self.coupled_side: dict[str, str] = {}
        self.coupled_batch_ndim: dict[str, int] = {}
        for side, trace, names in (
            ("guide", guide_trace, self.guide_enumerated),
            ("model", model_trace, self.model_enumerated),
        ):
            for name in [n for n in (trace.nodes if trace else ()) if n in names]:
                site = trace.nodes[name]
                fn = site["fn"]
                leaf = leaf_distribution(fn)
                leaf_event = tuple(leaf.event_shape)
                event = tuple(fn.event_shape)
                units = event[: len(event) - len(leaf_event)]
                in_markov = site["infer"].get("_markov_scope") is not None
                local = not _plates(site) <= data
                if (in_markov or local) and not units:
                    continue  # Pyro's own enumeration sums it by variable elimination
                support = leaf.enumerate_support(expand=False)
                support = support.reshape((support.shape[0],) + leaf_event)
                self.coupled[name] = _CoupledSite(name, support, units)
                self.coupled_side[name] = side
                self.coupled_batch_ndim[name] = len(fn.batch_shape)
        sizes = [(s.num_categories, s.num_units) for s in self.coupled.values()]
        self.num_coupled_configurations = math.prod(s.size for s in self.coupled.values())
        if self.num_coupled_configurations > max_configurations:
            raise LatentSpaceTooLargeError(
                f"exact enumeration of the coupled discrete sites needs {summarize_sizes(sizes)} "
                f"joint configurations, over max_configurations={max_configurations:,}; wrap "
                "sequential sites in pyro.markov, use a smaller latent space, an "
                "importance-weighted bound (iwae_log_likelihood), or a relaxed estimator"
            )

    def _block_capacity(self, model_trace, chunk_size: int | None) -> int:
        if chunk_size is not None:
            if chunk_size < 1:
                raise DVAEInputError(f"chunk_size must be >= 1, got {chunk_size}")
            return chunk_size
        return max(1, DEFAULT_MEMORY_BUDGET // (16 * self._floats_per_config))

    def _plan_blocks(self) -> None:
        """Split the coupled group of the partitioned side into blocks of <= capacity."""
        side = "guide" if self.guide_side else "model"
        names = [n for n in self.coupled if self.coupled_side[n] == side]
        capacity = self.blocks_size
        steps: dict[str, int] = {}
        room = capacity
        for name in reversed(names):  # the last sites vary fastest within a block
            size = self.coupled[name].size
            steps[name] = max(1, min(size, room))
            room = max(1, room // steps[name])
        ranges = [
            [
                (a, min(a + steps[n], self.coupled[n].size))
                for a in range(0, self.coupled[n].size, steps[n])
            ]
            for n in names
        ]
        self.blocks = [_Block(dict(zip(names, combo))) for combo in itertools.product(*ranges)]

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    # ---------------------------------------------------------------- traces ------------
    def traces(self, block: _Block, *, guide: Callable | None = None, guide_trace=None):
        """``(model_trace, guide_trace)`` of one block, enumerated, log-densities packed.

        ``guide_trace``: replay the guide's sampled sites from this trace (the same continuous
        draw for every block of a model-side sum).
        """
        if self._pending is not None and guide is None and guide_trace is None:
            pending, self._pending = self._pending, None
            if block is pending[0]:
                return pending[1], pending[2]
        model_marker = _EnumerateDiscrete(self.model_enumerated, self.coupled, block)
        guide_marker = _EnumerateDiscrete(self.guide_enumerated, self.coupled, block)
        model_trace, guide_trace = self._enumerated_traces(
            model_marker, guide_marker, self.max_plate_nesting, guide, guide_trace
        )
        guide_trace.pack_tensors()
        model_trace.pack_tensors(guide_trace.plate_to_symbol)
        return model_trace, guide_trace

    def _enumerated_traces(
        self,
        model_marker: Messenger,
        guide_marker: Messenger,
        nesting: int,
        guide: Callable | None = None,
        guide_trace=None,
    ):
        guide = self.guide if guide is None else guide
        guide_fn = BroadcastingMessenger()(guide) if guide is not None else _empty_guide
        if guide_trace is not None:
            guide_fn = poutine.replay(guide_fn, trace=guide_trace)
        guide_fn = EnumMessenger(first_available_dim=-1 - nesting)(guide_marker(guide_fn))
        model_fn = model_marker(BroadcastingMessenger()(self.model))
        model_fn = EnumMessenger()(model_fn)  # keeps allocating dims left of the guide's
        try:
            return get_importance_trace("flat", nesting, model_fn, guide_fn, self.args, self.kwargs)
        except (RuntimeError, ValueError) as error:
            first = shape_failure(error)
            if first is None:
                raise
            enumerated = sorted(self.guide_enumerated | self.model_enumerated)
            raise DVAEInputError(
                f"model or guide failed with the discrete sites {enumerated} enumerated "
                f"({first}); write them so latent values broadcast over extra leading dims "
                "(torch.broadcast_shapes and expand, not view(batch, ...) or expand(batch, ...))"
            ) from error

    # ---------------------------------------------------------------- model-side sums ----
    def log_marginal_terms(self, model_trace, guide_trace) -> tuple[torch.Tensor, float, object]:
        """One block's model-side sum, per datum (dense over the data plate).

        Returns ``(log_sum, scale, rest)``: ``log_sum`` is log sum over this block (and every
        other model-side discrete site) of the factors that depend on a summed site,
        unscaled; ``scale`` the subsampling scale to apply after combining blocks; ``rest`` the
        scaled log-densities that depend on no summed site (the same in every block) minus
        the guide's log q of the sampled sites, or ``0.0``.
        """
        costs, log_factors, ordering, sum_dims, scale = _compute_model_factors(
            model_trace, guide_trace
        )
        data_symbols = [model_trace.plate_to_symbol[f[0]] for f in self.data_frames]
        sizes = [f[2] for f in self.data_frames]
        log_sum = 0.0
        if log_factors:
            term = contract_to_tensor(
                log_factors,
                sum_dims,
                target_ordinal=frozenset(data_symbols),
                ring=_data_ring(data_symbols, sizes),
            )
            log_sum = _to_data(term, data_symbols, sizes)
        rest = 0.0
        for terms in costs.values():
            for term in terms:
                rest = rest + _to_data(term, data_symbols, sizes)
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                rest = rest - _to_data(site["packed"]["log_prob"], data_symbols, sizes)
        if not torch.is_tensor(log_sum):
            log_sum = torch.full(sizes, float(log_sum))
        return log_sum, float(scale), rest

    def block_log_marginals(self, guide_trace=None) -> Iterator[tuple[torch.Tensor, float, object]]:
        """``log_marginal_terms`` of every block, the guide's sampled sites replayed from
        ``guide_trace`` (if given) so that every block sees the same continuous draw."""
        for block in self.blocks:
            yield self.log_marginal_terms(*self.traces(block, guide_trace=guide_trace))

    def log_joint_table(self) -> torch.Tensor:
        """log p(x, c) for every joint configuration ``c`` of the coupled group, per datum.

        Shape ``[num_coupled_configurations, *data plate sizes]``, the first coupled site
        varying slowest; every other discrete site (plate-local, ``pyro.markov``) is summed out.
        Model-side only (``guide_side=False`` with no guide); no gradient.
        """
        names = list(self.coupled)
        sizes = [self.coupled[n].size for n in names]
        data_sizes = [f[2] for f in self.data_frames]
        table = None
        with torch.no_grad():
            for block in self.blocks:
                model_trace, guide_trace = self.traces(block)
                costs, log_factors, _, sum_dims, _ = _compute_model_factors(
                    model_trace, guide_trace
                )
                data_symbols = [model_trace.plate_to_symbol[f[0]] for f in self.data_frames]
                symbols = []
                for name in names:
                    infer = model_trace.nodes[name]["infer"]
                    symbols.append(infer["_dim_to_symbol"].get(infer.get("_enumerate_dim")))
                keep = {s for s in symbols if s in sum_dims}
                term = 0.0
                if log_factors:
                    target = frozenset(data_symbols)
                    ring = _data_ring(data_symbols, data_sizes)
                    total = contract_to_tensor(
                        log_factors, sum_dims, target_ordinal=target, ring=ring
                    )
                    term = _dense(total, symbols + data_symbols)
                    if keep:
                        # with target dims, Pyro contracts "modulo total": the factors that
                        # touch no kept dim are left out; they are what the total adds to the
                        # log-sum of the kept table
                        kept = contract_to_tensor(
                            log_factors,
                            sum_dims,
                            target_ordinal=target,
                            target_dims=keep,
                            ring=_data_ring(data_symbols, data_sizes),
                        )
                        kept = _dense(kept, symbols + data_symbols)
                        lead = list(range(len(symbols)))
                        term = kept + (term - kept.logsumexp(lead, keepdim=True))
                for terms in costs.values():
                    for cost in terms:
                        term = term + _dense(cost, data_symbols)
                term = torch.as_tensor(term)
                if table is None:
                    table = torch.empty(sizes + data_sizes, dtype=term.dtype)
                index = tuple(slice(*block.slices.get(n, (0, self.coupled[n].size))) for n in names)
                table[index] = term.expand(table[index].shape)
        return table.reshape([-1] + data_sizes)

    def coupled_values(self) -> dict[str, torch.Tensor]:
        """The coupled sites' values at every joint configuration (the rows of
        :meth:`log_joint_table`): ``[C, *batch dims as 1, *units, *leaf event]`` per site."""
        names = list(self.coupled)
        index = torch.arange(self.num_coupled_configurations)
        values = {}
        for name in reversed(names):  # the last site varies fastest
            site = self.coupled[name]
            digit = index % site.size
            index = index // site.size
            values[name] = site.values(0, site.size, self.coupled_batch_ndim[name])[digit]
        return {name: values[name] for name in names}

    def log_marginal(self) -> torch.Tensor:
        """Exact log p(x) per datum (flattened over the data plate), no gradient."""
        with torch.no_grad():
            return combine_blocks(list(self.block_log_marginals())).reshape(-1)


def combine_blocks(results: list[tuple[torch.Tensor, float, object]]) -> torch.Tensor:
    """Per-datum log sum over all blocks from each block's ``(log_sum, scale, rest)``.

    A block whose summed sites have a single configuration reports the factors that depend
    on them under ``rest`` instead of ``log_sum``; they are moved back (unscaled) before the
    blocks are log-sum-exp'ed, and the scale applied after.
    """
    _, scale, rest0 = results[0]
    log_sum = None
    for lp, _, rest in results:
        if rest is not rest0:
            lp = lp + (rest - rest0) / scale
        log_sum = lp if log_sum is None else torch.logaddexp(log_sum, lp)
    return scale * log_sum + rest0


@contextmanager
def _saved_rng():
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def drop_global_costs(model_trace, guide_trace, data_frames: list) -> None:
    """Zero the log-densities of non-enumerated sites outside the data plate, so that a
    guide-side sum over several blocks counts them once (in the first block) instead of once
    per block: a block's Dice weights live in the data plate and never reach them."""
    if not data_frames:
        return
    for trace in (model_trace, guide_trace):
        for site in trace.nodes.values():
            if site["type"] != "sample" or site["infer"].get("_enumerate_dim") is not None:
                continue
            frames = {f.name for f in site["cond_indep_stack"] if f.vectorized}
            if data_frames[0][0] in frames:
                continue
            zero = torch.zeros(())
            zero._pyro_dims = ""
            site["packed"]["log_prob"] = zero
            site["packed"]["unscaled_log_prob"] = zero


def _data_ring(data_symbols: list[str], sizes: list[int]) -> LogRing:
    """Pyro's log-space ring, told the data plates' sizes: packing drops a size-1 dim from
    every tensor, and the ring learns sizes only from the tensors it sees, so it could not
    broadcast a result to a data plate of one element."""
    return LogRing(dim_to_size=dict(zip(data_symbols, sizes)))


def _dense(term, symbols: list[str]) -> torch.Tensor | float:
    """A packed term as a dense tensor over ``symbols`` (in that order; absent ones size 1),
    summed over any other dim."""
    if not torch.is_tensor(term):
        return float(term)
    dims = getattr(term, "_pyro_dims", "")
    drop = [i for i, d in enumerate(dims) if d not in symbols]
    if drop:
        term = term.sum(drop)
        dims = "".join(d for d in dims if d in symbols)
    present = [d for d in symbols if d in dims]
    if dims:
        term = term.permute([dims.index(d) for d in present])
    shape = [term.shape[present.index(d)] if d in present else 1 for d in symbols]
    return term.reshape(shape)


def _floats_per_config(site: dict) -> int:
    """Floats of an observed site's log-density work per enumerated configuration: ``batch x
    event``, or ``batch + event`` for a distribution that scores by a matrix product."""
    fn = site["fn"]
    if getattr(leaf_distribution(fn), "broadcasts_efficiently", False):
        return fn.batch_shape.numel() + fn.event_shape.numel()
    return site["value"].numel() if torch.is_tensor(site["value"]) else 1


def _is_sample(site: dict) -> bool:
    return site["type"] == "sample" and not site_is_subsample(site)


def _dim(frame: tuple) -> int:
    return frame[1]


def _empty_guide(*args, **kwargs) -> None:
    return None


def _to_data(term, data_symbols: list[str], sizes: list[int]) -> torch.Tensor | float:
    """A packed term summed over every dim but the data plates, dense in their order."""
    term = _dense(term, data_symbols)
    return term if isinstance(term, float) else term.expand(sizes)
