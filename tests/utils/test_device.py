"""Device names resolve, and CUDA asked for where there is none is a one-line input error."""

from __future__ import annotations

import pytest
import torch

from pyro_dvae.errors import DVAEInputError
from pyro_dvae.utils.device import resolve_device


@pytest.mark.parametrize("name", ["cpu", " CPU ", None])
def test_cpu(name):
    assert resolve_device(name) == torch.device("cpu")


@pytest.mark.parametrize("name, fragment", [("tpu", "unknown device"), ("gpu0", "unknown device")])
def test_unknown_names(name, fragment):
    with pytest.raises(DVAEInputError, match=fragment):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda(name):
    with pytest.raises(DVAEInputError, match="CUDA is not available; pass --device cpu"):
        resolve_device(name)
