"""SSIM (Wang et al. 2004) and MS-SSIM (Wang, Simoncelli & Bovik 2003).

Both follow the authors' MATLAB code: an 11×11 Gaussian window (σ = 1.5) applied separably
with *valid* filtering (no padding; ``ssim_index.m`` / ``filter2(..., 'valid')``), K1 = 0.01,
K2 = 0.03, data range 1. Downsampling is MATLAB's box filter with symmetric borders
(``filters.box_downsample``). Defaults score BT.601 luma like the published tables.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from ..registry import METRICS
from .base import Metric
from .filters import box_downsample, filter_stack, gaussian_kernel1d
from .psnr import check_channel, to_channels

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # Wang et al. 2003, Table/Sec. 3


def ssim_maps(x: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor, k1: float, k2: float,
              data_range: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM map, contrast-structure map), both N×C×(H−k+1)×(W−k+1).

    The five local moments go through one filtering call.
    """
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    mu_x, mu_y, xx, yy, xy = filter_stack([x, y, x * x, y * y, x * y], kernel, "valid")
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_xx, s_yy, s_xy = xx - mu_xx, yy - mu_yy, xy - mu_xy
    cs = (2 * s_xy + c2) / (s_xx + s_yy + c2)
    lum = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1)
    return lum * cs, cs


class _SSIMBase(Metric):
    mode = "FR"
    lower_better = False
    differentiable = True

    def __init__(self, channel: str, win_size: int, sigma: float, k1: float, k2: float):
        super().__init__()
        self.channel = check_channel(channel)
        if int(win_size) != win_size or win_size < 1 or win_size % 2 == 0:
            raise InputError(f"win_size must be an odd positive integer, got {win_size!r}")
        if not sigma > 0:
            raise InputError(f"sigma must be > 0, got {sigma!r}")
        self.win_size, self.sigma, self.k1, self.k2 = int(win_size), float(sigma), float(k1), float(k2)
        self.register_buffer("kernel", gaussian_kernel1d(self.win_size, self.sigma).float(), persistent=False)


@METRICS.register("ssim")
class SSIM(_SSIMBase):
    """Mean SSIM over the valid region (per channel, then averaged for ``channel='rgb'``).

    ``downsample=True`` first applies the ``ssim.m`` wrapper's box-filter downsampling by
    f = max(1, round(min(H, W)/256)) (pyiqa's default); the default False is ``ssim_index.m``.
    """

    def __init__(self, channel: str = "y", downsample: bool = False, win_size: int = 11,
                 sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03):
        super().__init__(channel, win_size, sigma, k1, k2)
        self.downsample = bool(downsample)

    def score(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        x, ref = to_channels(x, self.channel), to_channels(ref, self.channel)
        if self.downsample:
            f = max(1, round(min(x.shape[-2:]) / 256))
            x, ref = box_downsample(x, f), box_downsample(ref, f)
        if min(x.shape[-2:]) < self.win_size:
            raise InputError(f"ssim needs images of at least {self.win_size} px per side, got {tuple(x.shape[-2:])}")
        s, _ = ssim_maps(x, ref, self.kernel, self.k1, self.k2)
        return s.flatten(1).mean(1)


@METRICS.register("ms_ssim")
class MSSSIM(_SSIMBase):
    """MS-SSIM over 5 scales: Π_{j<5} cs_j^{w_j} · (l·cs)_5^{w_5}.

    Each factor is the mean of its map; negative means are set to 0 (ReLU, as pytorch-msssim
    and pyiqa do) so fractional powers stay real. Per channel, averaged for ``channel='rgb'``.
    Between scales: 2×2 average with symmetric border (``msssim.m``; = avg_pool for even sizes).
    """

    def __init__(self, channel: str = "y", win_size: int = 11, sigma: float = 1.5,
                 k1: float = 0.01, k2: float = 0.03):
        super().__init__(channel, win_size, sigma, k1, k2)
        self.register_buffer("weights", torch.tensor(MS_SSIM_WEIGHTS), persistent=False)

    @property
    def min_size(self) -> int:
        """Smallest short side with a valid window at the 5th scale: (win−1)·2⁴ + 1."""
        return (self.win_size - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1

    def score(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise InputError(
                f"ms_ssim needs images of at least {self.min_size} px on the short side "
                f"({len(MS_SSIM_WEIGHTS)} scales of a {self.win_size}-px window), got {tuple(x.shape[-2:])}")
        x, ref = to_channels(x, self.channel), to_channels(ref, self.channel)
        factors = []
        n_scales = len(MS_SSIM_WEIGHTS)
        for j in range(n_scales):
            s, cs = ssim_maps(x, ref, self.kernel, self.k1, self.k2)
            factors.append((s if j == n_scales - 1 else cs).flatten(2).mean(2))
            if j < n_scales - 1:
                x, ref = box_downsample(x, 2), box_downsample(ref, 2)
        v = torch.relu(torch.stack(factors, 0))                       # scales × N × C
        w = self.weights.view(-1, 1, 1)
        # where(): pow's gradient at exactly 0 is inf; keep it out of the graph
        p = torch.where(v > 0, v.clamp_min(1e-30) ** w, torch.zeros_like(v))
        return p.prod(0).mean(1)
