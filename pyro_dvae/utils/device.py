"""Pick the torch device requested on the command line."""

from __future__ import annotations

import torch

from ..errors import DVAEInputError

__all__ = ["DEVICES", "resolve_device"]

#: the device names of the command line's ``--device``
DEVICES = ("cpu", "cuda")


def resolve_device(name: str | None = "cpu") -> torch.device:
    """Turn ``"cpu"`` (the default) or ``"cuda"``/``"cuda:N"`` into a :class:`torch.device`.

    Raises :class:`~pyro_dvae.errors.DVAEInputError` when CUDA is asked for but not available.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    text = "cpu" if name is None else str(name).strip().lower()
    if text == "cpu":
        return torch.device("cpu")
    if text == "cuda" or text.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DVAEInputError(
                f"device {name!r} was asked for but CUDA is not available; pass --device cpu"
            )
        try:
            device = torch.device(text)
        except RuntimeError as e:
            raise DVAEInputError(f"invalid device {name!r}: {e}; pass 'cpu' or 'cuda'") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DVAEInputError(
                f"device {name!r} does not exist ({torch.cuda.device_count()} CUDA devices); "
                "pass 'cuda' or 'cuda:0'"
            )
        return device
    raise DVAEInputError(f"unknown device {name!r}; pass 'cpu' or 'cuda'")
