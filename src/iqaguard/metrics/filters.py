"""Separable filtering and MATLAB-compatible resampling shared by the classic metrics.

Everything works on N×C×H×W float tensors, filters every channel independently (grouped
convolutions with 1-D kernels: two passes of k taps instead of one of k² taps) and is
differentiable. The MATLAB conventions (``fspecial``, ``imfilter`` padding, ``imresize``) are
reproduced because the published PSNR/SSIM/NIQE numbers were computed with them.
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F


def gaussian_kernel1d(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (float64).

    The outer product of two of these is MATLAB's ``fspecial('gaussian', size, sigma)``: that
    2-D window is separable and normalised to sum 1, so the 1-D factors are too.
    """
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    k = torch.exp(-(r ** 2) / (2.0 * sigma ** 2))
    return k / k.sum()


def pad_symmetric(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """MATLAB ``'symmetric'`` padding (mirror including the edge pixel), any pad size.

    ``F.pad(mode='reflect')`` excludes the edge and refuses pads ≥ the size, so this gathers
    mirrored indices instead (the index arithmetic folds repeatedly for large pads).
    """
    def idx(n: int, before: int, after: int) -> torch.Tensor:
        i = torch.arange(-before, n + after)
        period = 2 * n
        i = torch.remainder(i, period)
        return torch.where(i >= n, period - 1 - i, i).to(x.device)

    h, w = x.shape[-2:]
    if top or bottom:
        x = x.index_select(-2, idx(h, top, bottom))
    if left or right:
        x = x.index_select(-1, idx(w, left, right))
    return x


def _pad(x: torch.Tensor, ph: tuple[int, int], pw: tuple[int, int], mode: str) -> torch.Tensor:
    if mode == "valid":
        return x
    if mode == "symmetric":
        return pad_symmetric(x, ph[0], ph[1], pw[0], pw[1])
    if mode in ("replicate", "reflect", "constant"):
        return F.pad(x, (pw[0], pw[1], ph[0], ph[1]), mode=mode)
    raise ValueError(f"unknown padding mode {mode!r}")


def separable_filter(x: torch.Tensor, kernel: torch.Tensor, padding: str = "valid") -> torch.Tensor:
    """Correlate every channel of ``x`` with ``kernel ⊗ kernel`` (1-D kernel of k taps).

    ``padding``: ``'valid'`` (output shrinks by k-1, as MATLAB ``filter2(..., 'valid')``) or a
    'same'-size mode: ``'replicate'`` / ``'symmetric'`` (MATLAB ``imfilter`` options),
    ``'reflect'``, ``'constant'``. For even k the extra tap goes after the centre, like MATLAB.
    """
    return filter_stack([x], kernel, padding)[0]


def filter_stack(maps: list[torch.Tensor], kernel: torch.Tensor, padding: str = "valid") -> list[torch.Tensor]:
    """``separable_filter`` of several same-shape N×C×H×W maps in one call (e.g. SSIM's 5 moments).

    Float32 on CPU: images × channels × maps are folded into the channel axis of one channels-last
    tensor — the layout oneDNN's depthwise convolutions are fast for (measured 5-20× faster than
    NCHW grouped convolutions with one channel per image) — and the results come back as strided
    views, so the only copies are the stacking and the convolutions' own outputs.
    Other dtypes (float64: no fast CPU convolution) use a sum of shifted slices.
    """
    k = kernel.to(dtype=maps[0].dtype, device=maps[0].device)
    n = k.numel()
    before, after = (n - 1) // 2, n - 1 - (n - 1) // 2
    if maps[0].dtype != torch.float32 and maps[0].device.type == "cpu":
        return [_shift_add_separable(_pad(m, (before, after), (before, after), padding), k) for m in maps]
    b, c = maps[0].shape[:2]
    m = len(maps)
    # H×W×N×C×M in memory == a channels-last 1×(N·C·M)×H×W tensor
    y = torch.stack([t.permute(2, 3, 0, 1) for t in maps], -1)
    h, w = y.shape[:2]
    # unsqueeze before permute: oneDNN copies the input unless the batch stride is canonical too
    y = y.reshape(h, w, b * c * m).unsqueeze(0).permute(0, 3, 1, 2)
    y = _pad(y, (before, after), (before, after), padding).contiguous(memory_format=torch.channels_last)
    g = b * c * m
    y = F.conv2d(y, k.view(1, 1, n, 1).expand(g, 1, n, 1), groups=g)
    y = F.conv2d(y, k.view(1, 1, 1, n).expand(g, 1, 1, n), groups=g)
    oh, ow = y.shape[-2:]
    y = y.permute(0, 2, 3, 1).reshape(oh, ow, b, c, m)      # a view when the conv kept channels-last
    return [t.permute(2, 3, 0, 1) for t in y.unbind(-1)]     # unbind: one stack in backward, not m scatters


def weighted_shifts(x: torch.Tensor, taps: list[float], dim: int, size: int, step: int = 1) -> torch.Tensor:
    """Σ_i taps[i] · x[..., i : i + step·size : step, (:)] along ``dim`` (−2 or −1).

    Accumulates in place into one buffer (a python ``sum`` allocated a new full-size sum per
    tap). Not ``add_(…, alpha=t)``: its fused multiply-add rounds once instead of twice, and NIQE
    on flat areas, where the MSCN map is rounding noise, moved by 0.2 on TID2013 I19.
    """
    def part(i: int) -> torch.Tensor:
        return x[..., i:i + step * size:step, :] if dim == -2 else x[..., i:i + step * size:step]

    y = part(0) * taps[0]
    for i in range(1, len(taps)):
        y.add_(part(i) * taps[i])
    return y


def _shift_add_separable(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Sum of shifted slices; for float64 on CPU, where convolutions have no fast kernel."""
    taps = k.tolist()
    n = len(taps)
    y = weighted_shifts(x, taps, -2, x.shape[-2] - n + 1)
    return weighted_shifts(y, taps, -1, x.shape[-1] - n + 1)


def box_downsample(x: torch.Tensor, f: int) -> torch.Tensor:
    """MATLAB ``imfilter(x, ones(f)/f², 'symmetric', 'same')`` then ``x(1:f:end, 1:f:end)``.

    Used by Wang's ``ssim.m`` wrapper (f = round(min(H,W)/256)) and by ``msssim.m`` (f = 2).
    Output size is ceil(H/f) × ceil(W/f); for sizes divisible by f it equals ``avg_pool2d``.
    """
    if f <= 1:
        return x
    h, w = x.shape[-2:]
    oh, ow = math.ceil(h / f), math.ceil(w / f)
    before = (f + 1) // 2 - 1              # MATLAB's centre of an even kernel is floor((f+1)/2)
    x = pad_symmetric(x, before, oh * f - h - before, before, ow * f - w - before)
    return F.avg_pool2d(x, f, stride=f)


def _cubic(t: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB ``imresize``'s 'bicubic')."""
    a = t.abs()
    a2, a3 = a * a, a * a * a
    return torch.where(a <= 1, 1.5 * a3 - 2.5 * a2 + 1,
                       torch.where(a <= 2, -0.5 * a3 + 2.5 * a2 - 4 * a + 2, torch.zeros_like(a)))


@lru_cache(maxsize=None)
def _half_bicubic_taps() -> torch.Tensor:
    """The 8 taps of MATLAB ``imresize(x, 0.5)`` (bicubic, antialiased) along one axis.

    For scale s = 1/2 MATLAB stretches the kernel to h(t) = s·cubic(s·t) (width 8) and output
    pixel i (1-based) sits at u = 2i − 1/2, so the taps sit at distances ±0.5, ±1.5, ±2.5, ±3.5
    from input pixels 2i−4 … 2i+3; the weights are normalised to sum 1.
    """
    d = torch.tensor([3.5, 2.5, 1.5, 0.5, -0.5, -1.5, -2.5, -3.5], dtype=torch.float64)
    w = 0.5 * _cubic(0.5 * d)
    return w / w.sum()


def imresize_half(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(x, 0.5)`` (bicubic with antialiasing) for even H and W.

    Exact, borders included: MATLAB mirrors the border ('symmetric') rather than renormalising
    the truncated kernel as ``F.interpolate(..., antialias=True)`` does (that differs only in the
    3 outermost output rows/columns). A stride-2 separable convolution.
    """
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"imresize_half needs even sizes, got {tuple(x.shape[-2:])}")
    k = _half_bicubic_taps().to(dtype=x.dtype, device=x.device)
    x = pad_symmetric(x, 3, 3, 3, 3)     # output i reads 2i-4..2i+3 (1-based): 3 pixels beyond each edge
    taps = k.tolist()
    h, w = x.shape[-2] // 2 - 3, x.shape[-1] // 2 - 3
    y = weighted_shifts(x, taps, -2, h, step=2)     # stride-2 shift-add, any dtype
    return weighted_shifts(y, taps, -1, w, step=2)
