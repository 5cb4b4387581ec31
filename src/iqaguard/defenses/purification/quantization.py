"""``color-quantization``: round every channel to ``npp`` evenly spaced levels."""
from __future__ import annotations

import torch

from ...registry import DEFENSES
from ..base import Purifier
from ._checks import int_in


@DEFENSES.register("color-quantization")
class ColorQuantization(Purifier):
    """x ↦ round(x·(npp−1))/(npp−1) per channel (the study's formula; ``torch.round``, halves to even).

    Not differentiable (the gradient of rounding is zero a.e.): ``estimate_forward`` is the
    identity, i.e. the straight-through estimator used by BPDA.
    """

    differentiable = False

    def __init__(self, npp: int = 16):
        self.npp = int_in(npp, "npp", 2, 1 << 24)

    def transform(self, x, gens):
        levels = float(self.npp - 1)
        return torch.round(x * levels) / levels
