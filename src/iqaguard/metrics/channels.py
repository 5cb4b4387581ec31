"""Which channel(s) a classic metric scores, and the 8-bit rounding some conventions apply first.

``'yiq'``  Y of YIQ, 0.299 R + 0.587 G + 0.114 B, full range [0, 1]: pyiqa's default luma
           (``to_y_channel(..., color_space='yiq')``) for psnry, ssim, ms_ssim, niqe and brisque.
``'y'``    Y of MATLAB ``rgb2ycbcr`` (BT.601 studio range, [16, 235]/255), the super-resolution
           convention and pyiqa's ``color_space='ycbcr'``.
``'gray'`` MATLAB ``rgb2gray`` (0.2989, 0.5870, 0.1140): what the released MATLAB metrics see.
``'rgb'``  the three channels.

Every value keeps the meaning it had when it was introduced: a canonical spec written to a store
(e.g. ``ssim:channel=y,...``) must keep scoring the same thing.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ..images import rgb_to_gray, rgb_to_y

CHANNELS = ("yiq", "y", "gray", "rgb")


def check_channel(channel: str, allowed=CHANNELS) -> str:
    if channel not in allowed:
        raise InputError(f"channel must be one of {', '.join(map(repr, allowed))}, got {channel!r}")
    return channel


YIQ = ((0.299, 0.587, 0.114), (0.5959, -0.2746, -0.3213), (0.2115, -0.5227, 0.3112))   # pyiqa rgb2yiq


def rgb_to_yiq_y(x: torch.Tensor) -> torch.Tensor:
    """Y of YIQ (N×1×H×W), computed as pyiqa's ``rgb2yiq`` computes it — float32 weights, one
    matmul of the channels-last image with the full 3×3 matrix — so the values, and with them the
    8-bit rounding of exact .5 ties under ``quantize``, fall exactly where pyiqa's do (a matmul
    with the Y row alone rounds a few ties the other way)."""
    w = torch.tensor(YIQ, dtype=torch.float32).t().to(x)
    return torch.matmul(x.permute(0, 2, 3, 1), w)[..., :1].permute(0, 3, 1, 2)


def to_channels(x: torch.Tensor, channel: str) -> torch.Tensor:
    """N×3×H×W RGB in [0, 1] → the scored channel(s) in [0, 1] (N×1×H×W, or the image for 'rgb')."""
    if channel == "yiq":
        return rgb_to_yiq_y(x)
    if channel == "y":
        return rgb_to_y(x)
    return rgb_to_gray(x) if channel == "gray" else x


def round_levels(v: torch.Tensor) -> torch.Tensor:
    """Round values on the 0-255 scale to integers with a straight-through gradient (identity in
    the backward pass, as pyiqa's ``diff_round``), so the metric stays an attack target."""
    return v + (torch.round(v) - v).detach()


def quantize_unit(v: torch.Tensor) -> torch.Tensor:
    """``round_levels`` for values in [0, 1]: the nearest of the 256 levels k/255."""
    return round_levels(v * 255.0) / 255.0


def grey_levels(x: torch.Tensor, channel: str, quantize: bool) -> torch.Tensor:
    """Float64 N×1×H×W grey levels on the 0-255 scale for the NSS metrics (NIQE, BRISQUE).

    'yiq' is formed in float32 and scaled to 255 before float64, as pyiqa does, so that its
    rounding lands on the same integers; 'gray' and 'y' are formed in float64 (as before).
    """
    g = (rgb_to_yiq_y(x.float()) * 255.0).double() if channel == "yiq" else to_channels(x.double(), channel) * 255.0
    return round_levels(g) if quantize else g
