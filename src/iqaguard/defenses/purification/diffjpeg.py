"""``diffjpeg``: a differentiable model of baseline JPEG (Shin & Song 2017), and its building blocks.

Why our own and not ``kornia.enhance.jpeg_codec_differentiable``: kornia's codec rounds with the
cubic approximation only (no straight-through option), computes the quality scale and the table
entries through polynomial "floors" (at quality 50 the scale is 99.875, not libjpeg's 100),
subsamples chroma with an antialiased bilinear filter instead of JPEG's 2×2 average, and pads by
replication. Each departs from the spec the study uses (``DiffJPEGCoding(ste=True)``) or from
libjpeg; the measured distance to Pillow's real JPEG is in docs/methods/defenses.md.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...errors import InputError
from ...registry import DEFENSES
from ..base import Purifier
from ._checks import int_in

# ITU-T T.81 (JPEG) Annex K.1, Tables K.1 (luminance) and K.2 (chrominance): the IJG base tables.
LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
) + ((99,) * 8,) * 4

# JFIF full-range BT.601 (JFIF 1.02 §7), on 0..255 samples; chroma centred on 0 here (the +128
# offset cancels JPEG's level shift), luma shifted by −128 before the DCT.
_RGB_TO_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_YCC_TO_RGB = ((1.0, 0.0, 1.402), (1.0, -0.344136, -0.714136), (1.0, 1.772, 0.0))


def quality_scale(quality: int) -> int:
    """libjpeg's ``jpeg_quality_scaling``: 5000/q below 50 (integer division), else 200 − 2q."""
    return 5000 // quality if quality < 50 else 200 - 2 * quality


def scaled_table(base, quality: int) -> torch.Tensor:
    """libjpeg's ``jpeg_add_quant_table`` with baseline limits: ⌊(T·scale + 50)/100⌋ in [1, 255]."""
    t = (torch.tensor(base, dtype=torch.int64) * quality_scale(quality) + 50) // 100
    return t.clamp(1, 255).float()


def dct_matrix() -> torch.Tensor:
    """Orthonormal 8-point DCT-II, D[u, x] = c(u)·cos((2x+1)uπ/16): D·B·Dᵀ is JPEG's 2-D FDCT."""
    u = torch.arange(8, dtype=torch.float64)[:, None]
    x = torch.arange(8, dtype=torch.float64)[None, :]
    d = torch.cos((2 * x + 1) * u * math.pi / 16) * math.sqrt(2 / 8)
    d[0] /= math.sqrt(2)
    return d.float()


def ste_round(v: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward (straight-through estimator)."""
    return v + (torch.round(v) - v).detach()


def cubic_round(v: torch.Tensor) -> torch.Tensor:
    """Shin & Song's approximation round(v) + (v − round(v))³, used forward and backward."""
    r = torch.round(v)
    return r + (v - r) ** 3


def _to_blocks(p: torch.Tensor) -> torch.Tensor:
    n, c, h, w = p.shape
    return p.reshape(n, c, h // 8, 8, w // 8, 8).transpose(3, 4)


def _from_blocks(b: torch.Tensor) -> torch.Tensor:
    n, c, bh, bw = b.shape[:4]
    return b.transpose(3, 4).reshape(n, c, bh * 8, bw * 8)


def _code(planes: torch.Tensor, table: torch.Tensor, rounding) -> torch.Tensor:
    """8×8 block DCT → quantise (divide, round, multiply) → inverse DCT, on level-shifted planes."""
    d = dct_matrix().to(planes)
    q = table.to(planes)
    coef = d @ _to_blocks(planes) @ d.T
    coef = rounding(coef / q) * q
    return _from_blocks(d.T @ coef @ d)


def diff_jpeg(x: torch.Tensor, quality: int, ste: bool = True) -> torch.Tensor:
    """JPEG encode/decode of a float RGB batch in [0, 1], differentiable in ``x``.

    RGB → YCbCr (JFIF) → 4:2:0 (2×2 average of chroma) → 8×8 DCT → quantisation with the IJG
    tables scaled by ``quality`` as libjpeg does → rounding (straight-through, or cubic when
    ``ste`` is False) → dequantisation → IDCT → chroma upsampled bilinearly (half-pixel centres,
    libjpeg's "fancy" triangle upsampling) → RGB → clamp. The image is reflect-padded on the
    bottom/right to a multiple of 16 (one MCU) and cropped back, as in the study; sides too short
    to reflect (≤ the pad) are padded by replication instead, which is what libjpeg does.
    """
    rounding = ste_round if ste else cubic_round
    h, w = x.shape[-2:]
    ph, pw = (-h) % 16, (-w) % 16
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    m = torch.tensor(_RGB_TO_YCC, dtype=x.dtype, device=x.device)
    ycc = torch.einsum("ij,njhw->nihw", m, x * 255.0)
    y = _code(ycc[:, :1] - 128.0, scaled_table(LUMA_TABLE, quality), rounding) + 128.0
    chroma = _code(F.avg_pool2d(ycc[:, 1:], 2), scaled_table(CHROMA_TABLE, quality), rounding)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    minv = torch.tensor(_YCC_TO_RGB, dtype=x.dtype, device=x.device)
    rgb = torch.einsum("ij,njhw->nihw", minv, torch.cat([y, chroma], dim=1)) / 255.0
    return rgb[..., :h, :w].clamp(0, 1)


@DEFENSES.register("diffjpeg")
class DiffJpeg(Purifier):
    """Differentiable JPEG at ``quality`` (1..100); ``ste`` selects straight-through rounding
    (the study's ``DiffJPEGCoding(ste=True)``, exact rounding forward) or Shin & Song's cubic
    approximation (smooth, but its forward pass is not JPEG's rounding)."""

    differentiable = True

    def __init__(self, quality: int = 50, ste: bool = True):
        self.quality = int_in(quality, "quality", 1, 100)
        if not isinstance(ste, bool):
            raise InputError(f"ste must be a bool, got {ste!r}")
        self.ste = ste

    def transform(self, x, gens):
        return diff_jpeg(x, self.quality, self.ste)
