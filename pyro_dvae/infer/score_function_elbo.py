"""Score-function (REINFORCE) ELBO on the discrete guide, with optional variance-reducing baselines.

The guide's discrete latents are sampled exactly (no relaxation) and their gradient is the
score-function estimator of Pyro's :class:`~pyro.infer.TraceGraph_ELBO` (downstream costs,
Rao-Blackwellized through the trace's dependency structure). Baselines are Pyro's own: a
:class:`BaselineMessenger` adds ``infer={"baseline": {...}}`` to the guide's discrete sites at run
time, so the user's guide needs no edits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyro
import torch
from pyro.infer import TraceGraph_ELBO
from pyro.ops.provenance import detach_provenance
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample
from torch import nn

from ..errors import DVAEInputError

__all__ = [
    "AVERAGES",
    "BASELINES",
    "BaselineMessenger",
    "NeuralBaseline",
    "ScoreFunctionELBO",
]

BASELINES = ("none", "decaying_average", "neural")
#: how the decaying average is kept: one scalar per site, or Pyro's one per batch position
AVERAGES = ("site", "position")
_AVERAGE_PREFIX = "__baseline_avg_downstream_cost_"  # Pyro's param name for decaying averages


class NeuralBaseline(nn.Module):
    """An input-dependent baseline b(x): an MLP from each datum's features to one scalar.

    The learned baseline of NVIL (Mnih & Gregor 2014, arXiv:1402.0030).

    ``x`` has shape ``[batch, *features]``; the output has shape ``[batch]``.

    Example:
        >>> NeuralBaseline(5, hidden=(8,))(torch.zeros(3, 5)).shape
        torch.Size([3])
    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (64,)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = int(in_dim)
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1) if x.dim() > 1 else x.unsqueeze(-1)
        return self.net(flat).squeeze(-1)


def _per_site_baseline(module: Callable, shape: torch.Size, name: str) -> Callable:
    """Wrap ``module`` so that its ``[batch]`` output matches the site's downstream cost shape."""

    def baseline(x: torch.Tensor) -> torch.Tensor:
        out = module(x)
        if out.shape == shape:
            return out
        if len(shape) == out.dim() + 1 and shape[1:] == out.shape:  # vectorized particles
            return out.expand(shape)
        raise DVAEInputError(
            f"the neural baseline gives shape {tuple(out.shape)} at site '{name}', whose "
            f"downstream cost has shape {tuple(shape)}; the neural baseline supports latents "
            "inside a single data plate whose size is the first dim of x"
        )

    return baseline


def _cost_shape(site: dict) -> torch.Size:
    """The shape of a guide site's downstream cost in Pyro: its log_prob's, leading ones cut."""
    shape = site["log_prob"].shape
    while shape and shape[0] == 1:
        shape = shape[1:]
    return shape


class BaselineMessenger(Messenger):
    """Add :class:`~pyro.infer.TraceGraph_ELBO` baseline options to discrete latent sites.

    Every unobserved, non-reparameterizable sample site that declares no baseline of its own
    gets ``msg["infer"]["baseline"] = options`` (or ``options(msg)`` when ``options`` is a
    callable). Apply it to the guide.

    Example:
        >>> import pyro.distributions as dist, pyro.poutine as poutine
        >>> def guide():
        ...     pyro.sample("z", dist.Bernoulli(0.5))
        >>> with BaselineMessenger({"use_decaying_avg_baseline": True}):
        ...     tr = poutine.trace(guide).get_trace()
        >>> tr.nodes["z"]["infer"]["baseline"]
        {'use_decaying_avg_baseline': True}
    """

    def __init__(self, options: dict | Callable[[dict], dict]) -> None:
        super().__init__()
        self.options = options

    def _pyro_sample(self, msg: dict) -> None:
        fn = msg["fn"]
        if msg["is_observed"] or isinstance(fn, _Subsample) or getattr(fn, "has_rsample", False):
            return
        if "baseline" in msg["infer"]:  # the user's own baseline wins
            return
        options = self.options(msg) if callable(self.options) else dict(self.options)
        msg["infer"] = dict(msg["infer"], baseline=options)


class ScoreFunctionELBO(TraceGraph_ELBO):
    """Score-function (REINFORCE) gradient of the ELBO for guides with discrete latents.

    Latents are sampled from the discrete guide as written; the gradient of each latent's
    parameters is ``E_q[(cost - b) * grad log q(z|x)]`` with Pyro's downstream-cost
    Rao-Blackwellization (:class:`~pyro.infer.TraceGraph_ELBO`) and a baseline ``b``:

    - ``"none"``: plain REINFORCE (Williams 1992; Ranganath et al., Black Box Variational
      Inference, arXiv:1401.0118);
    - ``"decaying_average"``: an exponential moving average of the downstream cost with factor
      ``baseline_beta``, updated by Pyro's ``use_decaying_avg_baseline`` machinery. With
      ``baseline_average="site"`` (the default) it is one scalar per latent site: the average of
      the batch's mean cost, started from the first batch's mean cost (no baseline on that
      first step) and stored as a scalar in the param store. ``"position"`` is Pyro's own
      average, one per position in the batch and started from zero (reset to its mean when the
      batch shape changes). Under shuffled batches a position means nothing: in
      ``benchmarks/RESULTS.md`` the per-site average has 30-1600x less gradient variance in the
      first steps (no zero start) and the same later. ``"position"`` is a per-datum baseline
      only when every batch holds the same data in the same order;
    - ``"neural"``: an input-dependent baseline b(x) (NVIL, Mnih & Gregor 2014, arXiv:1402.0030),
      an MLP fitted by Pyro's squared-error baseline loss. It is registered with
      ``pyro.module(baseline_name, ...)`` on every call, so SVI's optimizer updates it.
      **The data x is read from the first positional argument** of ``model``/``guide``
      (shape ``[batch, *features]``, batch = the data plate). Pass ``baseline_net`` to use your
      own module mapping x to ``[batch]``. (NVIL's variance normalization is not applied.)

    The gradient is unbiased for every choice (the baseline never depends on the current sample).

    :param baseline: one of :data:`BASELINES`.
    :param baseline_beta: decay of the moving average (``"decaying_average"``).
    :param baseline_hidden: hidden widths of the neural baseline MLP.
    :param baseline_net: optional baseline module (``"neural"``); default: built on first call.
    :param baseline_name: its name in Pyro's param store.
    :param baseline_average: one of :data:`AVERAGES`: a scalar average per site, or one per
        batch position (``"decaying_average"``).
    :param kwargs: passed to :class:`~pyro.infer.TraceGraph_ELBO` (``num_particles``, ...).

    Example:
        >>> import pyro.distributions as dist
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5))
        ...         pyro.sample("x", dist.Normal(z, 1.0), obs=x)
        >>> def guide(x):
        ...     p = pyro.param("p", torch.tensor(0.5))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("z", dist.Bernoulli(p))
        >>> elbo = ScoreFunctionELBO(baseline="neural", baseline_hidden=(4,))
        >>> loss = elbo.loss_and_grads(model, guide, torch.zeros(3))
    """

    def __init__(
        self,
        baseline: str = "none",
        baseline_beta: float = 0.9,
        baseline_hidden: Sequence[int] = (64,),
        baseline_net: nn.Module | None = None,
        baseline_name: str = "score_function_baseline",
        baseline_average: str = "site",
        **kwargs,
    ) -> None:
        if baseline not in BASELINES:
            raise DVAEInputError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        if not 0.0 <= float(baseline_beta) < 1.0:
            raise DVAEInputError(f"baseline_beta must be in [0, 1), got {baseline_beta}")
        if baseline_average not in AVERAGES:
            raise DVAEInputError(
                f"baseline_average must be one of {AVERAGES}, got {baseline_average!r}"
            )
        super().__init__(**kwargs)
        self.baseline = baseline
        self.baseline_beta = float(baseline_beta)
        self.baseline_average = baseline_average
        self.baseline_hidden = tuple(baseline_hidden)
        self.baseline_net = baseline_net
        self.baseline_name = baseline_name

    def _neural_baseline(self, args: tuple) -> tuple[nn.Module, torch.Tensor]:
        if not args or not torch.is_tensor(args[0]):
            raise DVAEInputError(
                "the neural baseline reads the data x from the first positional argument of "
                "model and guide; call them as model(x, ...)"
            )
        x = args[0]
        if self.baseline_net is None:
            in_dim = x[0].numel() if x.dim() > 1 else 1
            net = NeuralBaseline(in_dim, self.baseline_hidden)
            dtype = x.dtype if x.is_floating_point() else None  # a float64 model: float64 net
            self.baseline_net = net.to(device=x.device, dtype=dtype)
        return self.baseline_net, x

    def _options(self, args: tuple) -> Callable[[dict], dict] | None:
        if self.baseline == "none":
            return None
        if self.baseline == "decaying_average":
            if self.baseline_average == "position":
                options = {"use_decaying_avg_baseline": True, "baseline_beta": self.baseline_beta}
                return lambda msg: dict(options)
            store = pyro.get_param_store()

            def per_site(msg: dict) -> dict:
                # a site's first observed cost starts its average: Pyro's update with beta = 0
                self._averaged_sites.append(msg["name"])
                first = _AVERAGE_PREFIX + msg["name"] not in store
                beta = 0.0 if first else self.baseline_beta
                return {"use_decaying_avg_baseline": True, "baseline_beta": beta}

            return per_site
        net, x = self._neural_baseline(args)
        pyro.module(self.baseline_name, net)

        def neural(msg: dict) -> dict:
            shape = torch.Size(msg["fn"].batch_shape)
            while shape and shape[0] == 1:  # Pyro squeezes leading ones of downstream costs
                shape = shape[1:]
            return {
                "nn_baseline": _per_site_baseline(net, shape, msg["name"]),
                "nn_baseline_input": x,
            }

        return neural

    def _get_trace(self, model, guide, args, kwargs):
        self._averaged_sites: list[str] = []  # sites given a per-site average in this trace
        options = self._options(args)
        if options is not None:
            guide = BaselineMessenger(options)(guide)
        model_trace, guide_trace = super()._get_trace(model, guide, args, kwargs)
        if self.baseline == "decaying_average" and self.baseline_average == "position":
            self._reset_stale_averages(guide_trace)
        return model_trace, guide_trace

    def _loss_and_surrogate_loss_particle(self, model_trace, guide_trace):
        """Pyro's particle loss; a per-site average enters it expanded to the cost's shape and
        leaves it as the mean of Pyro's per-position update (the mean of a decaying average of
        costs is the decaying average of the mean cost)."""
        if self.baseline != "decaying_average" or self.baseline_average != "site":
            return super()._loss_and_surrogate_loss_particle(model_trace, guide_trace)
        names = self._expand_site_averages(guide_trace, self._averaged_sites)
        try:
            return super()._loss_and_surrogate_loss_particle(model_trace, guide_trace)
        finally:
            store = pyro.get_param_store()
            with torch.no_grad():
                for key in names:
                    if key in store:
                        store[key] = detach_provenance(store[key]).detach().mean()

    @staticmethod
    def _expand_site_averages(guide_trace, sites: list[str]) -> list[str]:
        """Broadcast each site's scalar average to its downstream cost's shape, as Pyro needs."""
        store = pyro.get_param_store()
        names = []
        for name in sites:
            site = guide_trace.nodes[name]
            key = _AVERAGE_PREFIX + name
            names.append(key)
            if key in store:
                with torch.no_grad():
                    store[key] = store[key].detach().mean().expand(_cost_shape(site)).clone()
        return names

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A tensor whose value is the loss and whose gradient is the score-function estimate.

        Pyro's :class:`~pyro.infer.TraceGraph_ELBO` only offers ``loss_and_grads``; this form is
        what wrappers that call ``backward`` themselves need (e.g.
        :class:`torch.nn.parallel.DistributedDataParallel` around
        :class:`~pyro_dvae.distributed.ELBOLoss`). Its gradient includes the baseline's
        squared-error loss, exactly as ``loss_and_grads``.
        """
        # Pyro's helper returns the ELBO itself (not its negative) and the surrogate loss
        elbo, surrogate = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        loss = -torch.as_tensor(elbo, dtype=surrogate.dtype).detach()
        return surrogate + (loss - surrogate.detach())

    @staticmethod
    def _reset_stale_averages(guide_trace) -> None:
        """Pyro keeps one average per batch position; restart it from its mean on a new shape."""
        store = pyro.get_param_store()
        for name, site in guide_trace.nodes.items():
            key = _AVERAGE_PREFIX + name
            if site["type"] != "sample" or key not in store:
                continue
            shape = _cost_shape(site)
            old = store[key]
            if old.shape != shape:
                with torch.no_grad():
                    store[key] = old.mean().expand(shape).clone()
