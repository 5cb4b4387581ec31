"""Smoothing filters: ``gaussian-blur`` and ``median-blur`` (k×k, reflect padding, as in the study)."""
from __future__ import annotations

import torch
from kornia.filters import gaussian_blur2d
from kornia.filters import median_blur as kornia_median_blur

from ...registry import DEFENSES
from ..base import Purifier
from ._checks import fits_reflect, odd_kernel

def opencv_sigma(kernel_size: int) -> float:
    """σ for a k-tap Gaussian by OpenCV's ``getGaussianKernel`` rule: 0.3((k−1)/2 − 1) + 0.8."""
    return 0.3 * ((kernel_size - 1) / 2 - 1) + 0.8


def gaussian_blur(x: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """Separable k×k Gaussian with reflect (mirror, edge not repeated) padding."""
    if kernel_size == 1:
        return x
    return gaussian_blur2d(x, (kernel_size, kernel_size), (sigma, sigma), border_type="reflect", separable=True)


def median_blur(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """k×k median with reflect padding (kornia); odd k² so the median is one of the window's values
    and gradients flow to the selected pixel (differentiable almost everywhere)."""
    if kernel_size == 1:
        return x
    return kornia_median_blur(x, kernel_size, border_type="reflect")


@DEFENSES.register("gaussian-blur")
class GaussianBlur(Purifier):
    """k×k Gaussian blur, σ = 0.3((k−1)/2−1)+0.8 (OpenCV's rule; the study's torchvision
    ``GaussianBlur(k, σ)``), reflect padding. Differentiable (linear)."""

    differentiable = True

    def __init__(self, kernel_size: int = 3):
        self.kernel_size = odd_kernel(kernel_size)

    @property
    def sigma(self) -> float:
        return opencv_sigma(self.kernel_size)

    def transform(self, x, gens):
        fits_reflect(x, self.kernel_size)
        return gaussian_blur(x, self.kernel_size, self.sigma).clamp(0, 1)


@DEFENSES.register("median-blur")
class MedianBlur(Purifier):
    """k×k median filter with reflect padding (the study pads with reflect and takes the median
    over unfolded windows). Differentiable almost everywhere: the gradient goes to the median pixel."""

    differentiable = True

    def __init__(self, kernel_size: int = 3):
        self.kernel_size = odd_kernel(kernel_size)

    def transform(self, x, gens):
        fits_reflect(x, self.kernel_size)
        return median_blur(x, self.kernel_size)
