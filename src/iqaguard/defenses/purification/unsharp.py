"""``unsharp``: unsharp masking, x + amount·(x − blur(x)), clipped to [0, 1]."""
from __future__ import annotations

from ...registry import DEFENSES
from ..base import Purifier
from ._checks import fits_reflect, odd_kernel, real
from .blur import gaussian_blur

SIGMA = 1.0  # the study's fixed σ; only the window size varies with the preset


@DEFENSES.register("unsharp")
class Unsharp(Purifier):
    """Unsharp masking with a k×k Gaussian of σ = 1 (reflect padding, as ``gaussian-blur``).

    Source: the study's ``unsharp`` (x + amount·(x − blur(x)), clipped; σ=1, amount=1). Boosting
    the high-pass band is the opposite of blurring, but it also re-shapes adversarial noise, which
    is what the study measures. Differentiable (linear before the clip).
    """

    differentiable = True

    def __init__(self, kernel_size: int = 5, amount: float = 1.0):
        self.kernel_size = odd_kernel(kernel_size)
        real(amount, "amount", lo=0.0)
        self.amount = amount

    def transform(self, x, gens):
        fits_reflect(x, self.kernel_size)
        blurred = gaussian_blur(x, self.kernel_size, SIGMA)
        return (x + float(self.amount) * (x - blurred)).clamp(0, 1)
