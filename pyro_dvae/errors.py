"""Errors raised for bad user input.

Every error here carries a one-line message that names the problem and the fix, so that the
command line can print it as is and exit with status 2.
"""

from __future__ import annotations

__all__ = ["DVAEInputError", "DVAEWriteError", "LatentSpaceTooLargeError", "NonFiniteLossError"]


class DVAEInputError(ValueError):
    """Bad input from the user (data, latent spec, hyper-parameters, files).

    Example:
        >>> raise DVAEInputError("temperature must be > 0, got -1.0; pass a positive value")
        Traceback (most recent call last):
        ...
        pyro_dvae.errors.DVAEInputError: temperature must be > 0, got -1.0; pass a positive value
    """


class DVAEWriteError(DVAEInputError):
    """A file could not be written (no space left, read-only filesystem, quota): one line naming
    what could not be written, where, and what was kept. Every write of the package is atomic, so
    the previous file (the last good checkpoint) is intact. The command line exits with status 2.

    :ivar path: the file that could not be written.
    :ivar reason: the operating system's reason (``strerror``).
    :ivar what: what the file is (``"checkpoint"``, ``"figure"``, ...).

    Example:
        >>> e = DVAEWriteError("could not write metrics run/metrics.json (No space left on "
        ...                    "device)", path="run/metrics.json", reason="No space left on device")
        >>> isinstance(e, DVAEInputError), e.reason
        (True, 'No space left on device')
    """

    def __init__(
        self,
        message: str,
        *,
        path: object = None,
        reason: str | None = None,
        what: str = "file",
    ) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason
        self.what = what


class LatentSpaceTooLargeError(DVAEInputError):
    """An exact (enumeration) computation was asked for on a latent space that is too large.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> from pyro_dvae.infer import exact_log_likelihood
        >>> def model(x):
        ...     with pyro.plate("data", len(x)):
        ...         z = pyro.sample("z", dist.Bernoulli(0.5 * torch.ones(30)).to_event(1))
        ...         pyro.sample("x", dist.Normal(z.sum(-1), 1.0), obs=x)
        >>> try:
        ...     exact_log_likelihood(model, torch.zeros(2))
        ... except LatentSpaceTooLargeError as e:
        ...     print(str(e).split(",")[0])
        exact enumeration of the coupled discrete sites needs 2^30 = 1.07e+09 joint configurations
    """


class NonFiniteLossError(FloatingPointError):
    """The training loss or a gradient became NaN or infinite.

    Raised by :func:`~pyro_dvae.training.train`; the command line turns it into exit status 1.

    Example:
        >>> try:
        ...     raise NonFiniteLossError("training loss became nan at step 3; lower --lr")
        ... except FloatingPointError as e:
        ...     print(type(e).__name__, "-", e)
        NonFiniteLossError - training loss became nan at step 3; lower --lr
    """
