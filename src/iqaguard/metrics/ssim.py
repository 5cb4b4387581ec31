"""SSIM (Wang et al. 2004) and MS-SSIM (Wang, Simoncelli & Bovik 2003).

The core follows the authors' MATLAB code: an 11×11 Gaussian window (σ = 1.5) applied separably
with *valid* filtering (no padding; ``ssim_index.m`` / ``filter2(..., 'valid')``), K1 = 0.01,
K2 = 0.03, data range 1.

Defaults are pyiqa's ``ssim`` / ``ms_ssim`` (0.1.16, ``archs/ssim_arch.py``), so the numbers
equal pyiqa's under the same names: the Y of YIQ (``channel='yiq'``) rounded to 8-bit levels
(``quantize``; straight-through gradient), the contrast-structure map clipped at 0 per pixel
before it multiplies the luminance term (``clip_cs``), no ``ssim.m`` downsampling, and between
MS-SSIM scales ``avg_pool2d`` that zero-pads odd sides (``pool_border='zero'``). ``ssimc`` is
pyiqa's RGB variant.

``quantize``, ``clip_cs`` and ``pool_border`` were added after ``channel``: their default None
means pyiqa's choice for ``channel='yiq'`` and Wang's reference code (no rounding, no clipping,
``msssim.m``'s mirrored 2×2 mean) for 'y', 'gray' and 'rgb' — what specs with those channels
computed before, and so still compute.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import limits
from ..errors import InputError
from ..registry import METRICS
from .base import Metric
from .channels import check_channel, quantize_unit, to_channels
from .filters import box_downsample, filter_stack, gaussian_kernel1d

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)   # Wang et al. 2003, Table/Sec. 3
PYIQA_CHANNEL = "yiq"
POOL_BORDERS = ("symmetric", "zero")
#: Largest Gaussian window (side and sigma) accepted: published SSIM uses 11 px, sigma 1.5.
MAX_WINDOW = 1023


def ssim_maps(x: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor, k1: float, k2: float,
              data_range: float = 1.0, clip_cs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM map, contrast-structure map), both N×C×(H−k+1)×(W−k+1).

    The five local moments go through one filtering call. ``clip_cs`` sets negative cs to 0
    before the product (pyiqa), so anti-correlated windows count 0 rather than below 0.
    """
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    mu_x, mu_y, xx, yy, xy = filter_stack([x, y, x * x, y * y, x * y], kernel, "valid")
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    s_xx, s_yy, s_xy = xx - mu_xx, yy - mu_yy, xy - mu_xy
    cs = (2 * s_xy + c2) / (s_xx + s_yy + c2)
    if clip_cs:
        cs = torch.relu(cs)
    lum = (2 * mu_xy + c1) / (mu_xx + mu_yy + c1)
    return lum * cs, cs


def _flag(value, name: str, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true, false or none, got {value!r}")
    return value


class _SSIMBase(Metric):
    mode = "FR"
    lower_better = False
    differentiable = True

    def __init__(self, channel: str, win_size: int, sigma: float, k1: float, k2: float,
                 quantize: bool | None, clip_cs: bool | None):
        super().__init__()
        self.channel = check_channel(channel)
        if limits.integer(win_size, "win_size", 1, MAX_WINDOW) % 2 == 0:
            raise InputError(f"win_size must be an odd positive integer, got {win_size!r}")
        limits.real(sigma, "sigma", lo=0.0, lo_open=True, hi=MAX_WINDOW)
        limits.real(k1, "k1", lo=0.0, hi=1.0)    # Wang et al. 2004: K1 = 0.01, K2 = 0.03
        limits.real(k2, "k2", lo=0.0, hi=1.0)
        self.win_size, self.sigma, self.k1, self.k2 = int(win_size), float(sigma), float(k1), float(k2)
        pyiqa = self.channel == PYIQA_CHANNEL
        self.quantize = _flag(quantize, "quantize", pyiqa)
        self.clip_cs = _flag(clip_cs, "clip_cs", pyiqa)
        self.register_buffer("kernel", gaussian_kernel1d(self.win_size, self.sigma).float(), persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        v = to_channels(x, self.channel)
        return quantize_unit(v) if self.quantize else v


@METRICS.register("ssim")
class SSIM(_SSIMBase):
    """Mean SSIM over the valid region (per channel, then averaged for ``channel='rgb'``).

    ``downsample=True`` first applies the ``ssim.m`` wrapper's box-filter downsampling by
    f = max(1, round(min(H, W)/256)); the default False is ``ssim_index.m`` (and pyiqa's default).
    """

    def __init__(self, channel: str = PYIQA_CHANNEL, downsample: bool = False, win_size: int = 11,
                 sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03,
                 quantize: bool | None = None, clip_cs: bool | None = None):
        super().__init__(channel, win_size, sigma, k1, k2, quantize, clip_cs)
        self.downsample = bool(downsample)

    def score(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        x, ref = self.prepare(x), self.prepare(ref)
        if self.downsample:
            f = max(1, round(min(x.shape[-2:]) / 256))
            x, ref = box_downsample(x, f), box_downsample(ref, f)
        if min(x.shape[-2:]) < self.win_size:
            raise InputError(f"{self.name or 'ssim'} needs images of at least {self.win_size} px per side, "
                             f"got {tuple(x.shape[-2:])}")
        s, _ = ssim_maps(x, ref, self.kernel, self.k1, self.k2, clip_cs=self.clip_cs)
        return s.flatten(1).mean(1)


@METRICS.register("ssimc")
class SSIMC(SSIM):
    """pyiqa's ``ssimc``: SSIM on the three RGB channels, rounded to 8-bit levels, cs clipped at 0."""

    def __init__(self, downsample: bool = False, win_size: int = 11, sigma: float = 1.5,
                 k1: float = 0.01, k2: float = 0.03):
        super().__init__("rgb", downsample, win_size, sigma, k1, k2, quantize=True, clip_cs=True)


@METRICS.register("ms_ssim")
class MSSSIM(_SSIMBase):
    """MS-SSIM over 5 scales: Π_{j<5} cs_j^{w_j} · (l·cs)_5^{w_5}.

    Each factor is the mean of its map; negative means are set to 0 (ReLU, as pytorch-msssim
    and pyiqa do) so fractional powers stay real. Per channel, averaged for ``channel='rgb'``.
    Between scales a 2×2 mean: ``pool_border='symmetric'`` mirrors the last row/column of an odd
    side (``msssim.m``), ``'zero'`` is ``avg_pool2d`` zero-padded on both ends of an odd side
    (piq/pyiqa). Both are plain 2×2 averages on even sides.
    """

    def __init__(self, channel: str = PYIQA_CHANNEL, win_size: int = 11, sigma: float = 1.5,
                 k1: float = 0.01, k2: float = 0.03, quantize: bool | None = None,
                 clip_cs: bool | None = None, pool_border: str | None = None):
        super().__init__(channel, win_size, sigma, k1, k2, quantize, clip_cs)
        if pool_border is None:
            pool_border = "zero" if self.channel == PYIQA_CHANNEL else "symmetric"
        if pool_border not in POOL_BORDERS:
            raise InputError(f"pool_border must be one of {', '.join(map(repr, POOL_BORDERS))} or none, "
                             f"got {pool_border!r}")
        self.pool_border = pool_border
        self.register_buffer("weights", torch.tensor(MS_SSIM_WEIGHTS), persistent=False)

    @property
    def min_size(self) -> int:
        """Smallest short side with a valid window at the 5th scale: (win−1)·2⁴ + 1."""
        return (self.win_size - 1) * 2 ** (len(MS_SSIM_WEIGHTS) - 1) + 1

    def halve(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool_border == "symmetric":
            return box_downsample(x, 2)
        return F.avg_pool2d(x, 2, padding=(x.shape[-2] % 2, x.shape[-1] % 2))

    def score(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise InputError(
                f"ms_ssim needs images of at least {self.min_size} px on the short side "
                f"({len(MS_SSIM_WEIGHTS)} scales of a {self.win_size}-px window), got {tuple(x.shape[-2:])}")
        x, ref = self.prepare(x), self.prepare(ref)
        factors = []
        n_scales = len(MS_SSIM_WEIGHTS)
        for j in range(n_scales):
            s, cs = ssim_maps(x, ref, self.kernel, self.k1, self.k2, clip_cs=self.clip_cs)
            factors.append((s if j == n_scales - 1 else cs).flatten(2).mean(2))
            if j < n_scales - 1:
                x, ref = self.halve(x), self.halve(ref)
        v = torch.relu(torch.stack(factors, 0))                       # scales × N × C
        w = self.weights.view(-1, 1, 1)
        # where(): pow's gradient at exactly 0 is inf; keep it out of the graph
        p = torch.where(v > 0, v.clamp_min(1e-30) ** w, torch.zeros_like(v))
        return p.prod(0).mean(1)
