"""Random translations of images, the data augmentation of the semi-supervised recipes."""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["random_translate"]


def random_translate(
    x: torch.Tensor,
    max_shift: int,
    image_shape: tuple[int, int] = (28, 28),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Each flattened image of ``x`` (shape ``(n, height * width)``) translated by its own random
    integer offset in ``[-max_shift, max_shift]`` along each axis; the uncovered border is
    filled with zeros. ``max_shift=0`` returns ``x`` itself.

    Example:
        >>> x = torch.zeros(2, 9); x[:, 4] = 1.0  # a dot in the middle of 3x3 images
        >>> y = random_translate(x, 1, (3, 3), torch.Generator().manual_seed(0))
        >>> y.shape, y.sum(-1).tolist()
        (torch.Size([2, 9]), [1.0, 1.0])
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if max_shift == 0:
        return x
    h, w = image_shape
    if x.dim() != 2 or x.shape[-1] != h * w:
        raise ValueError(
            f"random_translate wants images flattened to (n, {h * w}) for image_shape {h}x{w}, "
            f"got shape {tuple(x.shape)}; pass image_shape=(height, width) of your images"
        )
    n = x.shape[0]
    padded = F.pad(x.reshape(n, h, w), (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator).to(x.device)
    rows = (offsets[:, :1] + torch.arange(h, device=x.device)).unsqueeze(-1)  # (n, h, 1)
    cols = (offsets[:, 1:] + torch.arange(w, device=x.device)).unsqueeze(1)  # (n, 1, w)
    index = torch.arange(n, device=x.device)[:, None, None]
    return padded[index, rows, cols].reshape(n, h * w)
