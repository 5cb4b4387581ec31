"""PSNR: peak signal-to-noise ratio, 10·log10(1/MSE) for data range 1.

Defaults are pyiqa's: ``psnr`` takes one MSE over the three RGB channels (pyiqa ``psnr``,
scikit-image, the published TID2013 calibration values); ``psnry`` scores the Y of YIQ, unrounded
(pyiqa ``psnry``: ``to_y_channel(x, 1.0, 'yiq')``). Other channels (``channels.py``) are a parameter.

Identical images would give +inf: the MSE is floored at ``mse_floor`` (default 1e-10 → 100 dB).
pyiqa adds 1e-8 to the MSE instead (80 dB cap); the two agree within 0.01 dB up to 53.6 dB
(10·log10(1 + 1e-8/MSE) ≤ 0.01) and drift apart above it (0.017 dB at 56 dB).
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ..registry import METRICS
from .base import Metric
from .channels import check_channel, to_channels


@METRICS.register("psnr")
class PSNR(Metric):
    """PSNR in dB (higher better) over ``channel``: 'rgb' (default), 'yiq', 'y' or 'gray'."""

    mode = "FR"
    lower_better = False
    differentiable = True

    def __init__(self, channel: str = "rgb", mse_floor: float = 1e-10):
        super().__init__()
        self.channel = check_channel(channel)
        if not mse_floor > 0:
            raise InputError(f"mse_floor must be > 0, got {mse_floor!r}")
        self.mse_floor = float(mse_floor)

    def score(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        d = to_channels(x, self.channel) - to_channels(ref, self.channel)
        mse = d.pow(2).flatten(1).mean(1)
        return -10.0 * torch.log10(mse.clamp_min(self.mse_floor))


@METRICS.register("psnry")
class PSNRY(PSNR):
    """pyiqa's ``psnry``: PSNR of the Y of YIQ (= ``psnr:channel=yiq``)."""

    def __init__(self, mse_floor: float = 1e-10):
        super().__init__("yiq", mse_floor)
