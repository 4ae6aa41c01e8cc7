"""Size limits of a training run, and what exceeding them would cost, in words.

:class:`~pyro_dvae.training.TrainConfig` refuses a latent space too large to enumerate and a
model too large to fit in memory; the helpers here estimate the cost for the error message.

Example:
    >>> from pyro_dvae.latent import LatentSpec
    >>> _too_many(LatentSpec.parse("20x10"), 2**20), _big(LatentSpec.parse("3x4"))
    (True, '64')
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..errors import DVAEInputError
from ..latent import LatentSpec

if TYPE_CHECKING:
    from ._config import TrainConfig

__all__ = ["MAX_LATENT_UNITS", "MAX_PARAMETERS"]

#: most latent units (N*K one-hot, or N Bernoulli) a model may have
MAX_LATENT_UNITS = 2**20
#: most encoder + decoder parameters (2**28 float32 = 1 GiB, ~4 GiB with gradients and Adam)
MAX_PARAMETERS = 2**28


def _too_many(spec: LatentSpec, limit: int) -> bool:
    """``K^N > limit`` without building a huge integer."""
    if spec.log2_configurations > math.log2(max(limit, 1)) + 1:
        return True
    return spec.num_configurations > limit


def _big(spec: LatentSpec) -> str:
    """``K^N`` in full when short, else as a power of ten."""
    log10 = spec.log2_configurations * math.log10(2)
    if log10 < 40:
        return str(spec.num_configurations)
    return f"~{_sci(log10)}"


def _sci(log10: float) -> str:
    exponent = math.floor(log10)
    return f"{10 ** (log10 - exponent):.1f}e{exponent:+d}"


def _duration(log10_seconds: float) -> str:
    for unit, seconds in (("years", 3.15576e7), ("days", 86400), ("hours", 3600), ("minutes", 60)):
        if log10_seconds >= math.log10(seconds):
            log10 = log10_seconds - math.log10(seconds)
            return f"{10**log10:.0f} {unit}" if log10 < 6 else f"{_sci(log10)} {unit}"
    return f"{10**log10_seconds:.2g} s"


def _bytes(log10_bytes: float) -> str:
    for unit, power in (("EB", 18), ("PB", 15), ("TB", 12), ("GB", 9), ("MB", 6)):
        if log10_bytes >= power:
            log10 = log10_bytes - power
            return f"{10**log10:.0f} {unit}" if log10 < 6 else f"{_sci(log10)} {unit}"
    return f"{10**log10_bytes:.0f} bytes"


def _enumeration_cost(spec: LatentSpec, config: TrainConfig) -> str:
    """What enumerating ``K^N`` configurations would cost per training step (one line)."""
    hidden = config.decoder_hidden or tuple(reversed(config.encoder_hidden)) or (1,)
    log10_k = spec.log2_configurations * math.log10(2)
    log10_pairs = log10_k + math.log10(config.batch_size)
    # the decoder's first layer alone costs 2 * dim * hidden flops per (configuration, datum)
    log10_flops = log10_pairs + math.log10(2 * spec.dim * int(hidden[0]))
    log10_mem = log10_k + math.log10(4 * spec.dim)  # every float32 code held at once
    return (
        f"a step on a batch of {config.batch_size} evaluates the decoder {_sci(log10_pairs)} "
        f"times (at least {_sci(log10_flops)} flops, about "
        f"{_duration(log10_flops - 10)} at 10 GFLOP/s), and the codes alone would take "
        f"{_bytes(log10_mem)} held at once"
    )


def _check_model_size(config: TrainConfig, data_dim: int) -> None:
    spec = LatentSpec.parse(config.latent)
    enc = [data_dim, *config.encoder_hidden, spec.dim]
    dec_hidden = config.decoder_hidden
    dec = [spec.dim, *(reversed(config.encoder_hidden) if dec_hidden is None else dec_hidden)]
    dec.append(data_dim)
    count = sum((int(a) + 1) * int(b) for layers in (enc, dec) for a, b in zip(layers, layers[1:]))
    if count > MAX_PARAMETERS:
        raise DVAEInputError(
            f"the encoder and decoder for {data_dim} features, latent '{spec}' and hidden sizes "
            f"{list(config.encoder_hidden)} would have {count:,} parameters "
            f"({_bytes(math.log10(16 * count))} with gradients and Adam state), over the limit "
            f"of {MAX_PARAMETERS:,}; use a smaller --latent or --encoder-hidden"
        )
