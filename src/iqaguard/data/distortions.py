"""Deterministic synthetic distortions in the style of KADID-10k, at five severity levels.

Types and most parameter ranges follow KADID-10k (Lin, Hosu & Saupe, "KADID-10k: A Large-scale
Artificially Distorted IQA Database", QoMEX 2019, and its MATLAB generator); spatial parameters
are scaled down for our 256 px contents, and ranges whose KADID order is not monotone (mean shift,
contrast) are re-ordered so that level 5 is always the worst. That monotonicity is what makes
"minus the level" a real ground truth for the bundled suite, and the tests check it.

Every entry of :data:`DISTORTIONS` is a pure function ``f(x, level, seed) -> y``: ``x`` is an
N×3×H×W float32 image in [0,1], ``level`` an int in 1..5 (5 = worst), ``seed`` a non-negative int.
Randomness (noise, positions, angles) comes from a ``torch.Generator`` seeded with ``seed`` and is
drawn identically at every level, so the levels of one seed are nested (level 5 perturbs the same
pixels as level 1, only more). Outputs are quantised to 8 bits, as if saved to PNG and read back.
"""
from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import hsv_to_rgb, lab_to_rgb, rgb_to_hsv, rgb_to_lab
from PIL import Image, features

from ..errors import InputError
from ..images import check_image, quantize_8bit, rgb_to_gray, to_tensor, to_uint8

Distortion = Callable[[torch.Tensor, int, int], torch.Tensor]

DISTORTIONS: dict[str, Distortion] = {}
LEVELS: dict[str, tuple] = {}          # name -> the 5 parameter values, level 1..5
DESCRIPTIONS: dict[str, str] = {}


def _register(name: str, params: tuple, description: str):
    if len(params) != 5:
        raise ValueError(f"distortion {name!r} needs 5 levels")

    def deco(raw: Callable[[torch.Tensor, object, torch.Generator], torch.Tensor]) -> Distortion:
        def distortion(x: torch.Tensor, level: int, seed: int = 0) -> torch.Tensor:
            check_image(x, "x")
            if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not 1 <= level <= 5:
                raise InputError(f"level must be an int in 1..5, got {level!r}")
            if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
                raise InputError(f"seed must be a non-negative int, got {seed!r}")
            gen = torch.Generator().manual_seed(int(seed) % (1 << 63))
            with torch.no_grad():
                y = raw(x.detach(), params[int(level) - 1], gen)
            return quantize_8bit(y.to(torch.float32)).to(x.device)

        distortion.__name__ = name
        distortion.__doc__ = f"{description} Levels 1..5: {params}."
        DISTORTIONS[name] = distortion
        LEVELS[name] = tuple(params)
        DESCRIPTIONS[name] = description
        return distortion

    return deco


def distort(x: torch.Tensor, name: str, level: int, seed: int = 0) -> torch.Tensor:
    """Apply the distortion ``name`` at ``level`` (1..5) with ``seed``."""
    if name not in DISTORTIONS:
        raise InputError(f"unknown distortion {name!r}; valid: {', '.join(DISTORTIONS)}")
    return DISTORTIONS[name](x, level, seed)


def jpeg2000_supported() -> bool:
    return bool(features.check("jpg_2000"))


# --------------------------------------------------------------------------- helpers

def _conv_replicate(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 2-D convolution with a kh×kw kernel, borders replicated (MATLAB 'replicate')."""
    kh, kw = kernel.shape
    c = x.shape[1]
    xp = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    w = kernel.to(x).expand(c, 1, kh, kw)
    return F.conv2d(xp, w, groups=c)


def _gauss1d(sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    return (k / k.sum()).float()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = _gauss1d(sigma)
    return _conv_replicate(_conv_replicate(x, k[None, :]), k[:, None])   # separable


def _supersampled_kernel(inside: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], r: int, ss: int = 8) -> torch.Tensor:
    """(2r+1)² kernel whose weights are the pixel area covered by a shape (anti-aliased, like fspecial)."""
    n = 2 * r + 1
    t = (torch.arange(n * ss, dtype=torch.float64) + 0.5) / ss - (r + 0.5)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    cover = inside(yy, xx).double().reshape(n, ss, n, ss).mean(dim=(1, 3))
    return (cover / cover.sum()).float()


def _pil_roundtrip(x: torch.Tensor, save: Callable[[Image.Image, io.BytesIO], None]) -> torch.Tensor:
    out = []
    for img in x:
        buf = io.BytesIO()
        save(Image.fromarray(to_uint8(img.cpu())), buf)
        buf.seek(0)
        with Image.open(buf) as dec:
            out.append(to_tensor(np.asarray(dec.convert("RGB"))))
    return torch.cat(out).to(x.device)


def _randn(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=gen).to(x)


def _rand(shape, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=gen).to(like)


# --------------------------------------------------------------------------- blur

@_register("gaussian_blur", (0.5, 1.0, 1.5, 2.5, 4.0), "Gaussian blur, sigma in pixels.")
def _gaussian_blur_d(x, sigma, gen):
    return _gaussian_blur(x, sigma)


@_register("lens_blur", (1, 2, 3, 4, 6), "Defocus: convolution with an anti-aliased disk of this radius.")
def _lens_blur(x, radius, gen):
    k = _supersampled_kernel(lambda y, z: y * y + z * z <= radius * radius, radius)
    return _conv_replicate(x, k)


@_register("motion_blur", (2, 4, 6, 9, 13), "Linear motion blur of this length (px) at a random angle.")
def _motion_blur(x, length, gen):
    theta = float(torch.rand((), generator=gen)) * math.pi
    c, s = math.cos(theta), math.sin(theta)
    r = math.ceil(length / 2)
    half = length / 2

    def inside(y, z):   # within half a pixel of the segment of the given length through the centre
        along = z * c - y * s
        across = z * s + y * c
        return (along.abs() <= half) & (across.abs() <= 0.5)

    return _conv_replicate(x, _supersampled_kernel(inside, r))


# --------------------------------------------------------------------------- colour

@_register("color_diffusion", (1.0, 2.0, 4.0, 6.0, 9.0), "Gaussian blur of the Lab chroma (a*, b*), sigma in px.")
def _color_diffusion(x, sigma, gen):
    lab = rgb_to_lab(x)
    ab = _gaussian_blur(lab[:, 1:], sigma)
    return lab_to_rgb(torch.cat([lab[:, :1], ab], 1), clip=True)


@_register("color_saturation_hsv", (0.7, 0.5, 0.3, 0.15, 0.0), "Desaturation: HSV saturation times this factor.")
def _saturation_hsv(x, factor, gen):
    hsv = rgb_to_hsv(x)
    hsv = torch.cat([hsv[:, :1], hsv[:, 1:2] * factor, hsv[:, 2:]], 1)
    return hsv_to_rgb(hsv)


@_register("color_saturation_lab", (1.5, 2.0, 3.0, 4.5, 6.0), "Over-saturation: Lab chroma (a*, b*) times this factor.")
def _saturation_lab(x, factor, gen):
    lab = rgb_to_lab(x)
    return lab_to_rgb(torch.cat([lab[:, :1], lab[:, 1:] * factor], 1), clip=True)


@_register("color_quantization", (64, 48, 32, 16, 8), "Palette of this many colours (Pillow fast octree, no dither).")
def _color_quantization(x, colors, gen):
    out = []
    for img in x:
        pil = Image.fromarray(to_uint8(img.cpu()))
        q = pil.quantize(colors=colors, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        out.append(to_tensor(np.asarray(q.convert("RGB"))))
    return torch.cat(out).to(x.device)


# --------------------------------------------------------------------------- compression

@_register("jpeg2000", (16, 32, 45, 120, 170), "JPEG 2000 (Pillow/OpenJPEG) at this compression ratio.")
def _jpeg2000(x, ratio, gen):
    if not jpeg2000_supported():
        raise InputError("distortion 'jpeg2000' needs Pillow built with OpenJPEG (features.check('jpg_2000') is False)")
    return _pil_roundtrip(x, lambda im, buf: im.save(buf, format="JPEG2000", quality_mode="rates",
                                                     quality_layers=[ratio], irreversible=True))


@_register("jpeg", (43, 36, 24, 7, 4), "JPEG (Pillow/libjpeg, 4:2:0) at this quality.")
def _jpeg(x, quality, gen):
    return _pil_roundtrip(x, lambda im, buf: im.save(buf, format="JPEG", quality=quality, subsampling=2))


# --------------------------------------------------------------------------- noise

@_register("white_noise", (0.001, 0.002, 0.003, 0.005, 0.01), "Additive Gaussian noise in RGB of this variance.")
def _white_noise(x, var, gen):
    return (x + _randn(x, gen) * math.sqrt(var)).clamp(0, 1)


@_register("impulse_noise", (0.001, 0.005, 0.01, 0.02, 0.03), "Salt-and-pepper noise: this fraction of samples set to 0 or 1.")
def _impulse_noise(x, density, gen):
    u = _rand(x.shape, gen, x)
    salt = _rand(x.shape, gen, x) < 0.5
    return torch.where(u < density, salt.to(x.dtype), x)


@_register("multiplicative_noise", (0.001, 0.005, 0.01, 0.02, 0.05), "Speckle x + x*n, n Gaussian of this variance.")
def _multiplicative_noise(x, var, gen):
    return (x * (1 + _randn(x, gen) * math.sqrt(var))).clamp(0, 1)


# --------------------------------------------------------------------------- brightness and contrast

@_register("brighten", (0.1, 0.2, 0.4, 0.7, 1.1), "Brightening tone curve x**(1/(1+a)).")
def _brighten(x, a, gen):
    return x.clamp_min(0).pow(1.0 / (1.0 + a))


@_register("darken", (0.05, 0.1, 0.2, 0.4, 0.8), "Darkening tone curve x**(1+a).")
def _darken(x, a, gen):
    return x.clamp_min(0).pow(1.0 + a)


@_register("mean_shift", (0.03, 0.06, 0.09, 0.12, 0.15), "Add this constant (sign drawn from the seed), clipped.")
def _mean_shift(x, shift, gen):
    sign = 1.0 if float(torch.rand((), generator=gen)) < 0.5 else -1.0
    return (x + sign * shift).clamp(0, 1)


@_register("contrast_change", (0.8, 0.65, 0.5, 0.35, 0.2), "Contrast reduction m + c*(x - m), m the mean grey level.")
def _contrast_change(x, c, gen):
    m = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)
    return m + c * (x - m)


@_register("high_sharpen", (0.5, 1.0, 2.0, 3.0, 5.0), "Unsharp masking x + a*(x - blur(x)), blur sigma 1 px.")
def _high_sharpen(x, amount, gen):
    return (x + amount * (x - _gaussian_blur(x, 1.0))).clamp(0, 1)


# --------------------------------------------------------------------------- spatial

@_register("pixelate", (2, 3, 4, 6, 8), "Area-average down by this factor, nearest-neighbour back up.")
def _pixelate(x, block, gen):
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h / block)), max(1, round(w / block))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


@_register("quantization", (16, 11, 8, 6, 4), "Uniform quantisation of each channel to this many levels.")
def _quantization(x, n, gen):
    return torch.round(x * (n - 1)) / (n - 1)


def _patch_side(h: int, w: int, frac: float) -> int:
    return max(2, round(min(h, w) * frac))


@_register("non_eccentricity_patch", (20, 40, 60, 80, 100), "This many small patches copied to a nearby random place.")
def _non_eccentricity_patch(x, n, gen):
    h, w = x.shape[-2:]
    p = _patch_side(h, w, 1 / 32)
    reach = 2 * p
    draws = torch.rand((100, 4), generator=gen)          # all 100 drawn, the first n used: nested
    y = x.clone()
    for i in range(n):
        sy, sx = int(draws[i, 0] * (h - p + 1)), int(draws[i, 1] * (w - p + 1))
        ty = min(max(sy + int((draws[i, 2] * 2 - 1) * reach), 0), h - p)
        tx = min(max(sx + int((draws[i, 3] * 2 - 1) * reach), 0), w - p)
        y[..., ty:ty + p, tx:tx + p] = x[..., sy:sy + p, sx:sx + p]
    return y


@_register("color_block", (2, 4, 6, 8, 10), "This many solid blocks of random colour at random places.")
def _color_block(x, n, gen):
    h, w = x.shape[-2:]
    p = _patch_side(h, w, 1 / 16)
    draws = torch.rand((10, 5), generator=gen)
    y = x.clone()
    for i in range(n):
        ty, tx = int(draws[i, 0] * (h - p + 1)), int(draws[i, 1] * (w - p + 1))
        y[..., ty:ty + p, tx:tx + p] = draws[i, 2:5].to(y).view(1, 3, 1, 1)
    return y
