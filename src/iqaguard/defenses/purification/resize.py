"""Resampling defenses: ``resize`` (the metric sees the small image) and ``upscale`` (down, then back)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...registry import DEFENSES
from ..base import Purifier
from ._checks import real


def scaled_size(h: int, w: int, scale: float) -> tuple[int, int]:
    """floor(side·scale), at least 1 pixel (torch's rounding for ``scale_factor``)."""
    return max(1, math.floor(h * scale)), max(1, math.floor(w * scale))


def downscale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear downscale with antialiasing (a triangle filter stretched by 1/scale), so high
    frequencies — where adversarial noise lives — are averaged out instead of aliased."""
    size = scaled_size(x.shape[-2], x.shape[-1], scale)
    if size == tuple(x.shape[-2:]):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def _check_scale(scale) -> float:
    return real(scale, "scale", lo=0.0, hi=1.0, lo_open=True, what=" (a downscale factor in (0, 1])")


@DEFENSES.register("resize")
class Resize(Purifier):
    """Downscale by ``scale`` (bilinear + antialias); the output **stays small**, as in the study,
    so the metric scores the small image (FR references are resized to match by ``align_ref``)."""

    differentiable = True
    changes_size = True

    def __init__(self, scale: float = 0.5):
        _check_scale(scale)
        self.scale = scale

    def transform(self, x, gens):
        return downscale(x, float(self.scale))


@DEFENSES.register("upscale")
class Upscale(Purifier):
    """Downscale by ``scale`` (bilinear + antialias), then bilinear back to the **input** size.

    Departure from the study, which upsamples to a hard-coded 384×512: we return the input's own
    size so every image keeps its geometry and FR comparisons need no resizing.
    """

    differentiable = True
    changes_size = False

    def __init__(self, scale: float = 0.5):
        _check_scale(scale)
        self.scale = scale

    def transform(self, x, gens):
        small = downscale(x, float(self.scale))
        if small.shape[-2:] == x.shape[-2:]:
            return small
        return F.interpolate(small, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
