"""The study's image-quality-preservation measure: RGB SSIM + RGB PSNR / 40, batched in torch.

The reference study (msu-video-group/adversarial-defenses-for-iqa, ``metrics/defences/utils/
metrics.py``) scores how much of the image a defense keeps with scikit-image at its defaults:
``structural_similarity(x, y, channel_axis=2, data_range=1)`` and
``peak_signal_noise_ratio(x, y, data_range=1)``. This module computes the same numbers per image
for a whole batch, so the runner needs no numpy round trip:

* SSIM: per channel, a 7×7 **uniform** window, sample covariances (normalised by 49/48),
  K1 = 0.01, K2 = 0.03, data range 1; the SSIM map is averaged over the valid region (skimage
  filters with reflection and then crops 3 pixels per side, which is exactly a 'valid' 7×7
  window), then over channels.
* PSNR: 10·log10(1 / MSE) over all pixels and channels of the image; +inf for identical images.
* similarity = SSIM + min(PSNR, 100 dB) / 40 (the cap keeps identical images finite: 1 + 2.5 = 3.5).

Computed in float64; images are the project's NCHW float32 in [0, 1].
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from iqaguard.errors import InputError
from iqaguard.images import check_pair

__all__ = ["ssim_rgb", "psnr_rgb", "similarity", "PSNR_CAP_DB", "LOSSLESS_SIMILARITY", "WIN_SIZE"]

WIN_SIZE = 7
"""scikit-image's default SSIM window (uniform, 7×7)."""
K1, K2 = 0.01, 0.03
PSNR_CAP_DB = 100.0
"""PSNR is clipped here before SSIM + PSNR/40 so identical images (PSNR = inf) stay finite."""
LOSSLESS_SIMILARITY = 1.0 + PSNR_CAP_DB / 40.0
"""similarity of an image with itself: SSIM 1 + 100/40 = 3.5."""


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    check_pair(x, y, ("x", "y"))
    if min(x.shape[-2:]) < WIN_SIZE:
        raise InputError(f"x: SSIM needs images of at least {WIN_SIZE}×{WIN_SIZE} pixels, got shape {tuple(x.shape)}")
    return x.detach().to(torch.float64), y.detach().to(torch.float64)


@torch.no_grad()
def ssim_rgb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (N,) float64, equal to skimage ``structural_similarity(..., channel_axis, data_range=1)``."""
    x, y = _pair(x, y)
    n, c, h, w = x.shape
    # all five local means in one pass: (N·C) planes × 5 statistics
    stack = torch.stack([x, y, x * x, y * y, x * y], dim=2).reshape(n * c, 5, h, w)
    mu_x, mu_y, m_xx, m_yy, m_xy = F.avg_pool2d(stack, WIN_SIZE, stride=1).unbind(1)
    cov_norm = WIN_SIZE ** 2 / (WIN_SIZE ** 2 - 1.0)          # use_sample_covariance=True
    vx = cov_norm * (m_xx - mu_x * mu_x)
    vy = cov_norm * (m_yy - mu_y * mu_y)
    vxy = cov_norm * (m_xy - mu_x * mu_y)
    c1, c2 = K1 ** 2, K2 ** 2                                   # (K·data_range)², data_range = 1
    s = ((2 * mu_x * mu_y + c1) * (2 * vxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (vx + vy + c2))
    return s.reshape(n, c, -1).mean(dim=2).mean(dim=1)


@torch.no_grad()
def psnr_rgb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (N,) float64 over all channels, data range 1; +inf where x == y."""
    x, y = _pair(x, y)
    mse = (x - y).pow(2).flatten(1).mean(dim=1)
    return 10.0 * torch.log10(1.0 / mse)


def similarity(ssim, psnr):
    """SSIM + min(PSNR, 100 dB) / 40 elementwise (torch tensors or numpy arrays); NaN stays NaN."""
    if isinstance(ssim, torch.Tensor) or isinstance(psnr, torch.Tensor):
        psnr = torch.as_tensor(psnr, dtype=torch.float64)
        return torch.as_tensor(ssim, dtype=torch.float64) + torch.clamp(psnr, max=PSNR_CAP_DB) / 40.0
    return np.asarray(ssim, dtype=np.float64) + np.minimum(np.asarray(psnr, dtype=np.float64), PSNR_CAP_DB) / 40.0
