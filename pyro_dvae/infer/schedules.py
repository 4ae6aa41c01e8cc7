"""Temperature schedules for relaxed (Gumbel-softmax) estimators."""

from __future__ import annotations

import math

from ..errors import DVAEInputError

__all__ = ["ConstantTemperature", "ExponentialDecayTemperature", "TemperatureSchedule"]


class TemperatureSchedule:
    """A map from the optimization step (0-based) to a temperature ``tau > 0``.

    Subclass it and implement ``__call__`` for a schedule of your own.

    Example:
        >>> class Linear(TemperatureSchedule):
        ...     def __call__(self, step):
        ...         return max(0.5, 1.0 - 1e-3 * step)
        >>> Linear()(100), Linear()(10_000)
        (0.9, 0.5)
    """

    def __call__(self, step: int) -> float:
        raise NotImplementedError


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise DVAEInputError(f"{name} must be a positive number, got {value}; pass e.g. 1.0")
    return value


class ConstantTemperature(TemperatureSchedule):
    """``tau(step) = tau``.

    Example:
        >>> ConstantTemperature(0.5)(1000)
        0.5
    """

    def __init__(self, tau: float) -> None:
        self.tau = _positive("temperature", tau)

    def __call__(self, step: int) -> float:
        return self.tau

    def __repr__(self) -> str:
        return f"ConstantTemperature({self.tau})"


class ExponentialDecayTemperature(TemperatureSchedule):
    """Jang et al.'s annealing: ``tau = max(tau_min, tau0 * exp(-rate * t))``, ``t`` updated
    every ``every`` steps (``t = every * floor(step / every)``).

    Reference: E. Jang, S. Gu, B. Poole. Categorical Reparameterization with Gumbel-Softmax.
    arXiv:1611.01144 (Sec. 4.1: r = 1e-5 .. 1e-4, updated every 1000 steps, tau_min = 0.5).

    Example:
        >>> s = ExponentialDecayTemperature(tau0=1.0, rate=1e-3, tau_min=0.5, every=100)
        >>> s(0), s(99), round(s(100), 4), s(10**6)
        (1.0, 1.0, 0.9048, 0.5)
    """

    def __init__(
        self, tau0: float = 1.0, rate: float = 3e-5, tau_min: float = 0.5, every: int = 1000
    ) -> None:
        self.tau0 = _positive("initial temperature", tau0)
        self.tau_min = _positive("minimum temperature", tau_min)
        if not math.isfinite(rate) or rate < 0:
            raise DVAEInputError(f"anneal rate must be >= 0, got {rate}; pass e.g. 3e-5")
        if int(every) < 1:
            raise DVAEInputError(f"anneal interval must be >= 1 step, got {every}")
        self.rate = float(rate)
        self.every = int(every)

    def __call__(self, step: int) -> float:
        t = self.every * (int(step) // self.every)
        return max(self.tau_min, self.tau0 * math.exp(-self.rate * t))

    def __repr__(self) -> str:
        return (
            f"ExponentialDecayTemperature(tau0={self.tau0}, rate={self.rate}, "
            f"tau_min={self.tau_min}, every={self.every})"
        )
