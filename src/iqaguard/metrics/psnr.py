"""PSNR: peak signal-to-noise ratio, 10·log10(1/MSE) for data range 1.

Default channel is BT.601 luma (MATLAB ``rgb2ycbcr`` Y, pyiqa's ``test_y_channel``), the
convention of published super-resolution/IQA tables; ``'gray'`` is MATLAB ``rgb2gray`` (what
MATLAB's ``ssim`` sees after ``rgb2gray``, and pyiqa's default YIQ luma). Identical images would give +inf; the MSE
is floored at ``mse_floor`` (default 1e-10 → 100 dB) so scores stay finite and comparable.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ..images import rgb_to_gray, rgb_to_y
from ..registry import METRICS
from .base import Metric

CHANNELS = ("y", "gray", "rgb")


def check_channel(channel: str, allowed=CHANNELS) -> str:
    if channel not in allowed:
        raise InputError(f"channel must be one of {', '.join(map(repr, allowed))}, got {channel!r}")
    return channel


def to_channels(x: torch.Tensor, channel: str) -> torch.Tensor:
    """``'y'`` → N×1×H×W BT.601 luma; ``'gray'`` → N×1×H×W ``rgb2gray``; ``'rgb'`` → the image."""
    if channel == "y":
        return rgb_to_y(x)
    return rgb_to_gray(x) if channel == "gray" else x


@METRICS.register("psnr")
class PSNR(Metric):
    """PSNR in dB (higher better). ``channel='rgb'`` takes the MSE over all three channels."""

    mode = "FR"
    lower_better = False
    differentiable = True

    def __init__(self, channel: str = "y", mse_floor: float = 1e-10):
        super().__init__()
        self.channel = check_channel(channel)
        if not mse_floor > 0:
            raise InputError(f"mse_floor must be > 0, got {mse_floor!r}")
        self.mse_floor = float(mse_floor)

    def score(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        d = to_channels(x, self.channel) - to_channels(ref, self.channel)
        mse = d.pow(2).flatten(1).mean(1)
        return -10.0 * torch.log10(mse.clamp_min(self.mse_floor))
