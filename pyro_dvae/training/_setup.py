"""Building a run: its data, temperature schedule, model, ELBO and SVI.

Example:
    >>> _make_schedule(TrainConfig(temperature=0.5))(0)
    0.5
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch

from ..latent import LatentSpec
from ._config import TrainConfig

__all__: list[str] = []


def _make_schedule(config: TrainConfig):
    from ..infer import ConstantTemperature, ExponentialDecayTemperature

    if config.schedule == "exponential":
        return ExponentialDecayTemperature(
            tau0=config.temperature,
            rate=config.anneal_rate,
            tau_min=config.tau_min,
            every=config.anneal_every,
        )
    return ConstantTemperature(config.temperature)


def _load_data(config: TrainConfig, dataset: Any | None) -> Any:
    from ..data import load_dataset, validate_data

    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    for split in ("train", "valid", "test"):
        validate_data(
            getattr(data, split), likelihood=config.likelihood, name=f"{data.name} {split} data"
        )
    return data


def _learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``total_steps``.

    Example:
        >>> cfg = TrainConfig(lr=1e-3, lr_schedule="cosine")
        >>> _learning_rate(cfg, 0, 100), _learning_rate(cfg, 50, 100), _learning_rate(cfg, 100, 100)
        (0.001, 0.0005, 0.0)
    """
    if config.lr_schedule == "constant":
        return config.lr
    progress = min(1.0, step / max(1, total_steps))
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))


def _build(
    config: TrainConfig, spec: LatentSpec, data: Any, device: torch.device, ctx: Any
) -> tuple[Any, Any, Any, Any]:
    """The model, ELBO, temperature schedule and SVI of a run, in this order (it fixes the
    parameters' initial values drawn from the RNG)."""
    from ..distributed import DataParallelSVI
    from ..infer import TorchOptimSVI, build_elbo
    from ..models import DiscreteVAE

    model = DiscreteVAE(
        data.data_dim,
        spec,
        encoder_hidden=tuple(config.encoder_hidden),
        decoder_hidden=None if config.decoder_hidden is None else tuple(config.decoder_hidden),
        prior=config.prior,
        likelihood=config.likelihood,
        dropout=config.dropout,
        encoder_noise=config.encoder_noise,
    ).to(device)
    elbo = build_elbo(
        config.estimator,
        temperature=config.temperature,
        kl=config.kl,
        num_particles=config.num_particles,
        max_configurations=config.max_configurations,
        gumbel_rao_samples=config.gumbel_rao_samples,
        max_plate_nesting=1,  # DiscreteVAE: one data plate
    )
    if getattr(elbo, "baseline", None) == "neural" and elbo.baseline_net is None:
        # built here rather than lazily in the first step, so that a resumed run has it to load
        from ..infer.score_function_elbo import NeuralBaseline

        elbo.baseline_net = NeuralBaseline(data.data_dim, elbo.baseline_hidden).to(device)
    schedule = _make_schedule(config)
    if config.weight_decay > 0:  # decoupled weight decay (Loshchilov & Hutter, arXiv:1711.05101)
        adam = lambda params: torch.optim.AdamW(  # noqa: E731
            params, lr=config.lr, weight_decay=config.weight_decay
        )
    else:
        adam = lambda params: torch.optim.Adam(params, lr=config.lr)  # noqa: E731
    if ctx.is_distributed:
        nets = [model] + ([elbo.baseline_net] if getattr(elbo, "baseline_net", None) else [])
        svi = DataParallelSVI(torch.nn.ModuleList(nets), model.model, model.guide, adam, elbo, ctx)
        if ctx.rank > 0:  # independent sampling noise per rank; rank 0 keeps the usual stream
            pyro.set_rng_seed(config.seed + 7919 * ctx.rank)
    else:
        svi = TorchOptimSVI(model.model, model.guide, adam, elbo)
    return model, elbo, schedule, svi
