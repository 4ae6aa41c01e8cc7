"""Shared by the tests in tests/training: a run that takes about a second."""

from __future__ import annotations

from pyro_dvae.training import TrainConfig

TIMING_KEYS = {"seconds", "train_seconds"}


def tiny(**kwargs) -> TrainConfig:
    """A run that takes about a second: 2x4 latent, small MLP, a few steps."""
    defaults = dict(
        latent="2x4",
        encoder_hidden=(32,),
        epochs=1,
        max_steps=5,
        iwae_samples=20,
    )
    defaults.update(kwargs)
    return TrainConfig(**defaults)


def strip_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS}
