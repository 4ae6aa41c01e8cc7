"""Export a trained Pyro model + guide with discrete latents to ArviZ data, and save/load it.

ArviZ's ``from_pyro`` needs an MCMC object (and is gone in ArviZ 1.x); a VAE is fitted by SVI,
so :func:`to_inference_data` runs the model and guide itself (``poutine.trace`` /
``poutine.replay`` / ``poutine.uncondition``) and builds the result with ``az.from_dict``:
an :class:`arviz.InferenceData` on ArviZ 0.x, an :class:`xarray.DataTree` on ArviZ 1.x.

Groups and variables (``z``/``x`` stand for the guide's latent and the model's observed sites;
their names are read from the traces, any number of each):

==================== =============================================================================
group                variables (dims after ``chain, draw``)
==================== =============================================================================
posterior            ``z`` ~ q(z|x) as integer codes ``(observation, latent_group)``: the category
                     index of a one-hot or index-valued categorical latent, 0/1 for Bernoulli
posterior_predictive ``x`` ~ p(x|z), z from the posterior ``(observation, data_dim)``
log_likelihood       ``x``: log p(x_i | z) per element of the data ``(observation, data_dim)``, in
                     nats (ArviZ's pointwise convention: the shape of ``observed_data.x``)
prior                ``z`` ~ p(z), codes as in the posterior
prior_predictive     ``x`` ~ p(x|z), z from the prior
observed_data        ``x`` ``(observation, data_dim)``, no chain/draw
constant_data        ``z_probs``: the probabilities of q(z|x) ``(observation, latent_group,
                     category)`` (``category`` is dropped for Bernoulli latents); ``z_prior_probs``:
                     those of p(z); ``label`` ``(observation,)`` when labels are given; no
                     chain/draw
training             the training trace, when a ``history`` is given: ``loss`` (nats/datum) and
                     ``temperature`` over ``step``; ``valid_nelbo`` and ``valid_step`` over
                     ``epoch``; no chain/draw (an ArviZ group of its own: SVI has no per-draw
                     statistics, so there is no ``sample_stats`` group)
==================== =============================================================================

Every group with samples has the same ``chain`` and ``draw`` coordinates (the prior is drawn in
``num_chains`` streams of ``num_prior_samples``), and every group carries the run's metadata in
its ``attrs``. The probabilities are not in ``posterior``: q(z|x) is a function of x, the same at
every draw, so ArviZ would report a NaN R-hat for each of its entries and plot thousands of
point masses. Where they do vary across draws (a site whose distribution depends on other
sampled sites, such as ``b`` of a guide q(a|x) q(b|a)), they stay in ``posterior`` / ``prior``
as ``<site>_probs`` with ``chain, draw``.

With these dims ``az.summary``, ``az.loo``, ``az.plot_posterior``, ``az.plot_forest``,
``az.plot_ppc`` and ``az.plot_loo_pit(idata, y="x")`` run as on any ArviZ data; on a large
export, select a few observations with ``coords={"observation": [0, 1]}`` for the plots
(ArviZ draws at most ``rcParams["plot.max_subplots"]`` panels). A code that q(z|x) puts all its
mass on is the same at every draw: ArviZ reports its R-hat as NaN (with numpy's "invalid value"
warnings), as for any constant.

Chains are independent sample streams (seeded separately), not Markov chains: R-hat and ESS of
the posterior only check the sampler's randomness. Other plates keep their own names. Every
exported site must sit inside exactly one data plate (e.g. ``pyro.plate("data", N)``); a model
with several observed sites gets one ``log_likelihood`` variable per site (pass ``var_name`` to
``az.loo``). A likelihood whose elements are not independent (other than Bernoulli vectors) is
scored per observation instead, and ``az.plot_loo_pit`` then needs a matching ``y``.

On LOO/WAIC: each observation has its own latent, so the log-likelihood here is log p(x_i | z_i)
with z_i ~ q(z_i | x_i): ``az.loo`` / ``az.waic`` run on it and summarize the in-sample
predictive fit of the decoder given the encoder's codes, per data element (sum
``log_likelihood["x"]`` over ``data_dim`` for one value per observation), but they are not
held-out estimates of log p(x); use :func:`~pyro_dvae.infer.exact_log_likelihood` or
:func:`~pyro_dvae.infer.iwae_log_likelihood` for that.

Example:
    >>> import arviz as az
    >>> from pyro_dvae.models import DiscreteVAE
    >>> vae = DiscreteVAE(6, "2x3", encoder_hidden=(8,))
    >>> idata = to_inference_data(vae, None, torch.ones(4, 6), num_samples=5, num_chains=2)
    >>> {g: dict(idata[g].sizes) for g in ("posterior", "prior", "constant_data")}
    ... # doctest: +NORMALIZE_WHITESPACE
    {'posterior': {'chain': 2, 'draw': 5, 'observation': 4, 'latent_group': 2},
     'prior': {'chain': 2, 'draw': 5, 'observation': 4, 'latent_group': 2},
     'constant_data': {'observation': 4, 'latent_group': 2, 'category': 3}}
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch

from ..errors import DVAEInputError, DVAEWriteError
from ..utils import rng_state, set_rng_state
from ..utils.options import require_positive_int
from . import _arviz_compat
from ._sites import (
    OBSERVATION,
    DimNamer,
    SiteInfo,
    discover_sites,
    elementwise_log_prob,
    site_probs,
)

__all__ = [
    "GROUPS",
    "SAMPLED_GROUPS",
    "export_run",
    "load_inference_data",
    "save_inference_data",
    "to_inference_data",
]

#: the groups written by :func:`to_inference_data` (``training`` only with a ``history``)
GROUPS = (
    "posterior",
    "posterior_predictive",
    "log_likelihood",
    "prior",
    "prior_predictive",
    "observed_data",
    "constant_data",
    "training",
)
#: the sampled groups: all with the same ``chain`` and ``draw`` coordinates
SAMPLED_GROUPS = GROUPS[:5]

_HISTORY_VARS = {  # metrics.json history key -> (variable name, dim)
    "loss": ("loss", "step"),
    "tau": ("temperature", "step"),
    "valid_nelbo": ("valid_nelbo", "epoch"),
    "valid_step": ("valid_step", "epoch"),
}


def _resolve(model: Any, guide: Callable | None) -> tuple[Callable, Callable, str]:
    from ..models import DiscreteVAE

    if isinstance(model, DiscreteVAE):
        return model.model, guide if guide is not None else model.guide, "DiscreteVAE"
    if not callable(model) or not callable(guide):
        raise DVAEInputError(
            "pass a DiscreteVAE, or a Pyro model and guide: to_inference_data(model, guide, x)"
        )
    return model, guide, getattr(model, "__qualname__", type(model).__name__)


def _stream_seed(seed: int, *stream: int) -> int:
    """Independent seeds for the posterior chains and the prior, all derived from ``seed``."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


def _compact(arr: np.ndarray, discrete: bool) -> np.ndarray:
    """Discrete values as small integers (one-hot codes, binary pixels), floats as float32."""
    if discrete and arr.size and np.all(arr == np.round(arr)):
        if arr.min() >= -128 and arr.max() <= 127:
            return arr.astype(np.int8)
        return arr.astype(np.int64)
    return arr.astype(np.float32) if arr.dtype == np.float64 else arr


def _per_observation(log_prob: torch.Tensor, info: SiteInfo) -> torch.Tensor:
    """Sum a site's log-density over every dim but the data plate: shape ``[num_observations]``."""
    lp = torch.as_tensor(log_prob)
    width = -info.data_dim
    if lp.dim() < width:
        lp = lp.reshape((1,) * (width - lp.dim()) + tuple(lp.shape))
    lp = lp.movedim(lp.dim() + info.data_dim, 0)
    lp = lp.reshape(lp.shape[0], -1).sum(-1)
    return lp.expand(info.num_observations)


class _Collector:
    """Gathers one array per variable per draw, then stacks them as ``(chain, draw, ...)``."""

    def __init__(self, namer: DimNamer, info: SiteInfo) -> None:
        self.namer, self.info = namer, info
        self.values: dict[str, list[np.ndarray]] = {}

    def add_site(self, site: Mapping[str, Any], value: torch.Tensor, observed: bool) -> None:
        arr, dims = self.namer.site_array(site, value, self.info, observed, as_codes=True)
        self._add(site["name"], _compact(arr, site["fn"].support.is_discrete), dims)

    def add_probs(self, site: Mapping[str, Any], name: str) -> None:
        found = site_probs(site)
        if found is not None:
            probs, category = found
            arr, dims = self.namer.site_array(site, probs, self.info, False, category=category)
            self._add(name, arr.astype(np.float32), dims)

    def add_array(self, name: str, arr: np.ndarray, dims: list[str]) -> None:
        self._add(name, arr, dims)

    def _add(self, name: str, arr: np.ndarray, dims: list[str]) -> None:
        self.namer.dims.setdefault(name, dims)
        self.values.setdefault(name, []).append(arr)

    def stacked(self, chains: int) -> dict[str, np.ndarray]:
        out = {}
        for name, arrays in self.values.items():
            arr = np.stack(arrays)
            out[name] = arr.reshape((chains, arr.shape[0] // chains) + arr.shape[1:])
        return out


def _draw_posterior(
    model: Callable,
    guide: Callable,
    args: tuple,
    kwargs: Mapping[str, Any],
    info: SiteInfo,
    posterior: _Collector,
    probs: _Collector,
    predictive: _Collector,
    log_lik: _Collector,
) -> None:
    guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(poutine.uncondition(poutine.replay(model, trace=guide_tr))).get_trace(
        *args, **kwargs
    )
    for name in info.latent:
        site = guide_tr.nodes[name]
        posterior.add_site(site, site["value"], observed=False)
        probs.add_probs(site, f"{name}_probs")
    for name in info.observed:
        site = model_tr.nodes[name]
        predictive.add_site(site, site["value"], observed=True)
        lp, per_element = elementwise_log_prob(site["fn"], site["infer"]["obs"])
        if per_element:
            arr, dims = log_lik.namer.site_array(site, lp, info, observed=True)
        else:
            arr, dims = _per_observation(lp, info).cpu().numpy(), [OBSERVATION]
        log_lik.add_array(name, arr.astype(np.float64), dims)


def _draw_prior(
    model: Callable,
    args: tuple,
    kwargs: Mapping[str, Any],
    info: SiteInfo,
    prior: _Collector,
    probs: _Collector,
    predictive: _Collector,
) -> None:
    model_tr = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
    for name in info.latent:
        if name in model_tr.nodes:
            site = model_tr.nodes[name]
            prior.add_site(site, site["value"], observed=False)
            probs.add_probs(site, f"{name}_prior_probs")
    for name in info.observed:
        site = model_tr.nodes[name]
        predictive.add_site(site, site["value"], observed=True)


def _observed(
    model: Callable, args: tuple, kwargs: Mapping[str, Any], info: SiteInfo, namer: DimNamer
) -> dict[str, np.ndarray]:
    model_tr = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
    out = {}
    for name in info.observed:
        site = model_tr.nodes[name]
        arr, _ = namer.site_array(site, site["infer"]["obs"], info, observed=True)
        out[name] = _compact(arr, site["fn"].support.is_discrete)
    return out


def _history_arrays(history: Mapping[str, Sequence[float]]) -> tuple[dict, dict, dict]:
    values, dims, coords = {}, {}, {}
    for key, (name, dim) in _HISTORY_VARS.items():
        seq = np.asarray(history.get(key) or [], dtype=np.float64).reshape(-1)
        if seq.size == 0:
            continue
        if dim in coords and len(coords[dim]) != seq.size:
            raise DVAEInputError(
                f"history[{key!r}] has {seq.size} entries but other per-{dim} entries have "
                f"{len(coords[dim])}; pass the history written by training"
            )
        coords[dim] = np.arange(1, seq.size + 1)
        values[name] = seq
        dims[name] = [dim]
    return values, dims, coords


def _split_constant(
    probs: Mapping[str, np.ndarray], dims: Mapping[str, list[str]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Probabilities that are the same at every chain and draw (``constant``, without those
    dims) and those that vary (kept with them)."""
    constant, varying = {}, {}
    for name, arr in probs.items():
        if np.all(arr == arr[:1, :1]):
            constant[name] = arr[0, 0]
        else:
            varying[name.replace("_prior_probs", "_probs")] = arr
    return constant, varying


def to_inference_data(
    model: Any,
    guide: Callable | None = None,
    data: torch.Tensor | None = None,
    *,
    num_samples: int = 100,
    num_chains: int = 4,
    num_prior_samples: int | None = None,
    labels: torch.Tensor | np.ndarray | None = None,
    history: Mapping[str, Sequence[float]] | None = None,
    latent_sites: Sequence[str] | None = None,
    observed_sites: Sequence[str] | None = None,
    coords: Mapping[str, Sequence[Any]] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    seed: int | None = 0,
    attrs: Mapping[str, Any] | None = None,
) -> Any:
    """Sample a trained model/guide on ``data`` and return ArviZ data (see the module docs).

    :param model: a :class:`~pyro_dvae.models.DiscreteVAE` (then ``guide`` may be ``None``) or a
        Pyro model called as ``model(data, **model_kwargs)``.
    :param guide: the Pyro guide q(z|x), called like the model.
    :param data: the observations (one per element of the model's data plate).
    :param num_samples: draws per chain; ``num_chains``: independent streams (posterior and
        prior alike).
    :param num_prior_samples: draws from the prior per chain (default ``num_samples``).
    :param labels: optional known class per observation, stored as ``constant_data.label``.
    :param history: optional training history (``metrics.json["history"]``) for the
        ``training`` group.
    :param latent_sites, observed_sites: restrict the export to these sites (default: every
        unobserved guide site and every observed model site).
    :param coords: coordinate values for dims, e.g. ``{"observation": test_indices}``.
    :param seed: seeds every stream, leaving the global RNG state as it was; ``None`` draws
        from the global RNG.
    :param attrs: extra attributes for every group (strings and numbers).

    Example:
        >>> import arviz as az
        >>> from pyro_dvae.models import DiscreteVAE
        >>> vae = DiscreteVAE(6, "2x3", encoder_hidden=(8,))
        >>> x = torch.bernoulli(torch.full((5, 6), 0.5))
        >>> idata = to_inference_data(vae, None, x, num_samples=10, num_chains=2)
        >>> dict(idata.posterior["z"].sizes)
        {'chain': 2, 'draw': 10, 'observation': 5, 'latent_group': 2}
        >>> dict(idata.constant_data["z_probs"].sizes)
        {'observation': 5, 'latent_group': 2, 'category': 3}
        >>> dict(idata.log_likelihood["x"].sizes)
        {'chain': 2, 'draw': 10, 'observation': 5, 'data_dim': 6}
        >>> idata.posterior.attrs["latent_sites"]
        'z'

    """
    model_fn, guide_fn, model_name = _resolve(model, guide)
    if not isinstance(data, torch.Tensor):
        raise DVAEInputError(
            f"data must be a torch.Tensor of observations, got {type(data).__name__}; "
            "convert it with torch.as_tensor(x, dtype=torch.float32)"
        )
    num_samples = require_positive_int("num_samples", num_samples, "num_samples=100")
    num_chains = require_positive_int("num_chains", num_chains, "num_chains=4")
    num_prior = require_positive_int(
        "num_prior_samples",
        num_samples if num_prior_samples is None else num_prior_samples,
        "num_prior_samples=100",
    )
    args, kwargs = (data,), dict(model_kwargs or {})
    saved = rng_state() if seed is not None else None
    try:
        with torch.no_grad():
            if seed is not None:
                pyro.set_rng_seed(_stream_seed(seed, 2))
            info = discover_sites(model_fn, guide_fn, args, kwargs, latent_sites, observed_sites)
            namer = DimNamer()
            post, q_probs, post_pred, log_lik = (_Collector(namer, info) for _ in range(4))
            prior, p_probs, prior_pred = (_Collector(namer, info) for _ in range(3))
            for chain in range(num_chains):
                if seed is not None:
                    pyro.set_rng_seed(_stream_seed(seed, 0, chain))
                for _ in range(num_samples):
                    _draw_posterior(
                        model_fn, guide_fn, args, kwargs, info, post, q_probs, post_pred, log_lik
                    )
            for chain in range(num_chains):
                if seed is not None:
                    pyro.set_rng_seed(_stream_seed(seed, 1, chain))
                for _ in range(num_prior):
                    _draw_prior(model_fn, args, kwargs, info, prior, p_probs, prior_pred)
            observed = _observed(model_fn, args, kwargs, info, namer)
    finally:
        if saved is not None:
            set_rng_state(saved)

    dims = dict(namer.dims)
    constant, q_varying = _split_constant(q_probs.stacked(num_chains), dims)
    p_constant, p_varying = _split_constant(p_probs.stacked(num_chains), dims)
    constant.update(p_constant)
    for name in p_varying:
        dims.setdefault(name, dims[name.replace("_probs", "_prior_probs")])
    groups: dict[str, dict[str, np.ndarray]] = {
        "posterior": {**post.stacked(num_chains), **q_varying},
        "posterior_predictive": post_pred.stacked(num_chains),
        "log_likelihood": log_lik.stacked(num_chains),
        "prior": {**prior.stacked(num_chains), **p_varying},
        "prior_predictive": prior_pred.stacked(num_chains),
        "observed_data": observed,
        "constant_data": constant,
    }
    all_coords: dict[str, Any] = {}
    if labels is not None:
        label_arr = np.asarray(
            labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels
        ).reshape(-1)
        if label_arr.shape[0] != info.num_observations:
            raise DVAEInputError(
                f"got {label_arr.shape[0]} labels for {info.num_observations} observations; "
                "pass one label per observation"
            )
        groups["constant_data"]["label"] = label_arr.astype(np.int64)
        dims["label"] = [OBSERVATION]
    training = None
    if history:
        training = _history_arrays(history)
        all_coords.update(training[2])
    all_coords.update(coords or {})
    meta = {
        "source": "pyro_dvae.analysis.to_inference_data",
        "model": model_name,
        "latent_sites": ",".join(info.latent),
        "observed_sites": ",".join(info.observed),
        "data_plate": info.data_plate,
        "num_chains": num_chains,
        "num_samples": num_samples,
        "num_prior_samples": num_prior,
        "seed": -1 if seed is None else int(seed),
    }
    meta.update({k: v for k, v in (attrs or {}).items() if v is not None})
    idata = _arviz_compat.from_dict(groups, coords=all_coords, dims=dims, attrs=meta)
    if training is not None:
        values, train_dims, train_coords = training
        _arviz_compat.add_group(idata, "training", values, dims=train_dims, coords=train_coords)
    _arviz_compat.set_group_attrs(idata, meta)
    return idata


def export_run(
    run_dir: str | os.PathLike,
    *,
    split: str = "test",
    num_observations: int | None = 200,
    num_samples: int = 100,
    num_chains: int = 4,
    seed: int = 0,
) -> Any:
    """Export a ``pyro-dvae train`` run: its model on (the first ``num_observations`` of) a
    data split, with labels when the dataset has them and the training trace.

    Example:
        >>> idata = export_run("runs/default", num_samples=50)  # doctest: +SKIP
        >>> idata.sample_stats["loss"].sizes["step"] > 0  # doctest: +SKIP
        True
    """
    from .runs import load_run

    if split not in ("train", "valid", "test"):
        raise DVAEInputError(f"unknown split {split!r}; choose train, valid or test")
    run = load_run(run_dir)
    dataset = run.load_data()
    x = getattr(dataset, split)
    labels = getattr(dataset, f"{split}_labels")
    if num_observations is not None:
        require_positive_int("num_observations", num_observations, "num_observations=200")
        x = x[:num_observations]
        labels = None if labels is None else labels[:num_observations]
    attrs = {
        "run_dir": str(run.run_dir),
        "dataset": dataset.name,
        "split": split,
        "latent": str(run.config.get("latent")),
        "estimator": str(run.config.get("estimator")),
        "checkpoint_step": run.step,
    }
    if dataset.image_shape is not None:
        attrs["image_shape"] = "x".join(str(s) for s in dataset.image_shape)
    return to_inference_data(
        run.model,
        None,
        x,
        num_samples=num_samples,
        num_chains=num_chains,
        labels=labels,
        history=run.history,
        seed=seed,
        attrs=attrs,
    )


def save_inference_data(idata: Any, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``idata`` to a netCDF file (atomically); refuse to replace a file unless asked.

    Written into a run directory, under its lock (:func:`~pyro_dvae.utils.files.lock_owner`);
    an :class:`OSError` while writing raises :class:`~pyro_dvae.errors.DVAEWriteError`.

    Example:
        >>> save_inference_data(idata, "run.nc")  # doctest: +SKIP
        PosixPath('run.nc')
    """
    path = Path(path)
    if path.is_dir():
        raise DVAEInputError(f"{path} is a directory; pass a file name such as {path}/run.nc")
    if path.exists() and not overwrite:
        raise DVAEInputError(f"{path} already exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise DVAEInputError(f"directory {path.parent} does not exist; create it first")
    from ..utils.files import atomic_path, lock_owner

    try:
        with lock_owner(path.parent), atomic_path(path, what="netCDF file") as tmp:
            idata.to_netcdf(str(tmp))
    except DVAEWriteError as e:
        step = getattr(idata, "attrs", {}).get("checkpoint_step")
        kept = "the previous file, if any, is kept"
        if step is not None:
            kept = f"the previous file, if any, and the run's checkpoint (step {step}) are kept"
        raise DVAEWriteError(
            f"could not write netCDF file {path} ({e.reason}); {kept}",
            path=e.path,
            reason=e.reason,
            what=e.what,
        ) from None
    return path


def load_inference_data(path: str | os.PathLike) -> Any:
    """Read a netCDF file written by :func:`save_inference_data` (fully into memory).

    Example:
        >>> idata = load_inference_data("run.nc")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise DVAEInputError(f"{path} does not exist; write it with 'pyro-dvae export'")
    try:
        return _arviz_compat.open_netcdf(path)
    except (OSError, ValueError) as e:
        raise DVAEInputError(f"{path} is not a readable netCDF file ({type(e).__name__})") from None
