"""Errors raised for bad user input.

Every error here carries a one-line message that names the problem and the fix, so that the
command line can print it as is and exit with status 2.
"""

from __future__ import annotations

__all__ = ["DVAEInputError", "LatentSpaceTooLargeError", "NonFiniteLossError"]


class DVAEInputError(ValueError):
    """Bad input from the user (data, latent spec, hyper-parameters, files).

    Example:
        >>> raise DVAEInputError("temperature must be > 0, got -1.0; pass a positive value")
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: temperature must be > 0, got -1.0; pass a positive value
    """


class LatentSpaceTooLargeError(DVAEInputError):
    """An exact (enumeration) computation was asked for on a latent space that is too large."""


class NonFiniteLossError(FloatingPointError):
    """The training loss or a gradient became NaN or infinite."""
