"""``random-noise``: additive Gaussian noise, then clamping to [0, 1]."""
from __future__ import annotations

import torch

from ...registry import DEFENSES
from ..base import Purifier
from ._checks import real


@DEFENSES.register("random-noise")
class RandomNoise(Purifier):
    """x + σ·n, n ~ N(0, I), clamped to [0, 1] (the study's ``random-noise``).

    Randomized: with per-image seeds each image's noise comes from its own generator, so the
    same seed gives the same noise field to the clean and the attacked image of a pair and the
    result does not depend on batching; without seeds, fresh draws (for EOT). Differentiable in x.
    """

    differentiable = True
    randomized = True

    def __init__(self, sigma: float = 0.01):
        real(sigma, "sigma", lo=0.0)
        self.sigma = sigma

    def transform(self, x, gens):
        if gens is None:
            noise = torch.randn(x.shape, device=x.device, dtype=x.dtype)
        else:
            noise = torch.stack([self.draw_normal(gens, i, x.shape[1:], x.device) for i in range(x.shape[0])])
        return (x + float(self.sigma) * noise).clamp(0, 1)
