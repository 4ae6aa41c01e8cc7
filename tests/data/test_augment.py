"""random_translate against a hand-written per-image shift (torch.roll with the wrapped border
zeroed), and its errors."""

from __future__ import annotations

import pytest
import torch

from pyro_dvae.data import random_translate

pytestmark = pytest.mark.usefixtures("one_thread")


def shifted(image: torch.Tensor, dr: int, dc: int) -> torch.Tensor:
    """``image`` moved down by ``dr`` rows and right by ``dc`` columns, zeros where it left."""
    out = torch.roll(image, (dr, dc), (0, 1))
    h, w = image.shape
    if dr > 0:
        out[:dr] = 0
    elif dr < 0:
        out[h + dr :] = 0
    if dc > 0:
        out[:, :dc] = 0
    elif dc < 0:
        out[:, w + dc :] = 0
    return out


def test_each_image_is_one_of_the_allowed_shifts_and_all_shifts_occur():
    h, w, s = 5, 4, 1
    image = torch.arange(1.0, h * w + 1).reshape(h, w)
    x = image.reshape(1, -1).expand(400, -1).contiguous()
    out = random_translate(x, s, (h, w), torch.Generator().manual_seed(3))
    candidates = {
        (dr, dc): shifted(image, dr, dc).reshape(-1)
        for dr in range(-s, s + 1)
        for dc in range(-s, s + 1)
    }
    seen = set()
    for row in out:
        match = [k for k, v in candidates.items() if torch.equal(row, v)]
        assert len(match) == 1, "not a translation of the image by at most max_shift"
        seen.add(match[0])
    assert seen == set(candidates)  # 400 draws over 9 offsets: each one appears


def test_zero_shift_is_the_identity_and_the_generator_makes_it_reproducible():
    x = torch.rand(6, 16)
    assert random_translate(x, 0, (4, 4)) is x
    a = random_translate(x, 2, (4, 4), torch.Generator().manual_seed(1))
    b = random_translate(x, 2, (4, 4), torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "shape, shift, message",
    [((3, 10), 1, "image_shape=\\(height, width\\)"), ((3, 16), -1, "max_shift must be >= 0")],
)
def test_bad_input_names_the_fix(shape, shift, message):
    with pytest.raises(ValueError, match=message):
        random_translate(torch.zeros(shape), shift, (4, 4))
