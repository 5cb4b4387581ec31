"""The study's image-quality measure: RGB SSIM (scikit-image defaults) + RGB PSNR / 40.

scikit-image's ``structural_similarity(x, y, channel_axis=-1, data_range=1)``: a 7×7 uniform
window, K1 = 0.01, K2 = 0.03, sample covariances (N/(N−1)), the SSIM map averaged over the
region the window fully covers, then over channels. ``peak_signal_noise_ratio(x, y, data_range=1)``
over all channels. Batched in torch; one value per image.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ssim_rgb", "psnr_rgb", "similarity", "PSNR_CAP_DB"]

PSNR_CAP_DB = 100.0
_WIN = 7
_C1, _C2 = 0.01 ** 2, 0.03 ** 2


def ssim_rgb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image (N,), scikit-image defaults on every channel, data range 1."""
    x, y = x.double(), y.double()
    if min(x.shape[-2:]) < _WIN:
        raise ValueError(f"images must be at least {_WIN}×{_WIN} for SSIM")
    pool = lambda t: F.avg_pool2d(t, _WIN, stride=1)  # noqa: E731  (valid region = skimage's crop)
    cov = _WIN * _WIN / (_WIN * _WIN - 1.0)
    ux, uy = pool(x), pool(y)
    vx = cov * (pool(x * x) - ux * ux)
    vy = cov * (pool(y * y) - uy * uy)
    vxy = cov * (pool(x * y) - ux * uy)
    s = ((2 * ux * uy + _C1) * (2 * vxy + _C2)) / ((ux * ux + uy * uy + _C1) * (vx + vy + _C2))
    return s.mean(dim=(-2, -1)).mean(dim=1).float()


def psnr_rgb(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PSNR per image (N,) over all channels, data range 1 (inf for identical images)."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(1.0 / mse)).float()


def similarity(ssim, psnr):
    """The study's similarity score: SSIM + min(PSNR, 100 dB) / 40."""
    return ssim + torch.clamp(torch.as_tensor(psnr), max=PSNR_CAP_DB) / 40.0
