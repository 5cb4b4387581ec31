"""``bilateral-blur``: an edge-preserving purifier, as an iqaguard plugin (entry point, no repo change)."""
from __future__ import annotations

from iqaguard.defenses.base import Purifier
from iqaguard.errors import InputError
from kornia.filters import bilateral_blur

__all__ = ["BilateralBlur"]


class BilateralBlur(Purifier):
    """k×k bilateral filter (Tomasi & Manduchi 1998) with reflect padding; differentiable."""

    differentiable = True
    paper = "Bilateral Filtering for Gray and Color Images"
    authors = "Tomasi, Manduchi (1998)"
    link = "https://doi.org/10.1109/ICCV.1998.710815"
    weights_licence = "none"

    def __init__(self, kernel_size: int = 5, sigma_color: float = 0.1, sigma_space: float = 1.5):
        if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
            raise InputError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
        for name, v in (("sigma_color", sigma_color), ("sigma_space", sigma_space)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise InputError(f"{name} must be a positive number, got {v!r}")
        self.kernel_size, self.sigma_color, self.sigma_space = kernel_size, float(sigma_color), float(sigma_space)

    def transform(self, x, gens):
        k = self.kernel_size
        if min(x.shape[-2:]) <= k // 2:
            raise InputError(f"image {tuple(x.shape[-2:])} is too small for a {k}×{k} reflect-padded filter")
        return bilateral_blur(x, (k, k), self.sigma_color, (self.sigma_space, self.sigma_space),
                              border_type="reflect").clamp(0, 1)
