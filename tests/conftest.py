"""Shared fixtures: small deterministic 8-bit images and toy metrics."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is as fast as two and does not spin-wait on a shared machine.
    Use as ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def images():
    """Two 8-bit RGB images, 2×3×64×64, float32 in [0,1]."""
    g = torch.Generator().manual_seed(0)
    return torch.round(torch.rand(2, 3, 64, 64, generator=g) * 255) / 255
