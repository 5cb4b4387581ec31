"""``realesrgan``: Real-ESRGAN's ``realesr-general-x4v3`` (Wang et al., ICCVW 2021) as a purifier.

As in the study (``metrics/defences/realesrgan/run.py``): the compact VGG-style network
SRVGGNetCompact (num_feat 64, num_conv 32, ×4, PReLU) with weights blended by deep network
interpolation (DNI) between the main model and the weak-denoise ``realesr-general-wdn-x4v3``:
``w = s·w_main + (1 − s)·w_wdn`` for every tensor, s = ``denoise_strength`` = 0.2 (Real-ESRGAN's
``inference_realesrgan.py``: ``dni_weight = [denoise_strength, 1 − denoise_strength]`` for
``[main, wdn]``; with s = 1 only the main model is used), fp32, no pre-padding, no tiling.

SRVGGNetCompact (xinntao/Real-ESRGAN, ``srvgg_arch.py``; read, not copied): ``body`` is a
ModuleList conv(3→F) , PReLU(F), [conv(F→F), PReLU(F)] × num_conv, conv(F→3·16), all 3×3 with
bias; the output is pixel-shuffled ×4 and the nearest-neighbour ×4 upsampled input is added (the
network learns a residual). The published ``.pth`` files hold ``{'params': state_dict}`` with
keys ``body.<i>.weight/bias``; loading is strict.

Output size: Real-ESRGAN's ``enhance(..., outscale)`` resizes the ×4 result to ``outscale`` × the
input with OpenCV's Lanczos-4 (after rounding to 8 bits). The study asks for outscale 1, but its
modified ``enhance`` dropped that resize and returned the ×4 image unclamped. We return the
``outscale`` size (default 1: the input size) by an antialiased bicubic resize — differentiable,
unlike OpenCV's — and clamp to [0, 1]; ``outscale=4`` gives the study's ×4 output.
"""
from __future__ import annotations

import math
from numbers import Integral, Real

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import InputError
from ...limits import MAX_DEPTH, MAX_WIDTH
from ._checks import int_in
from ...registry import DEFENSES
from ._learned import LearnedPurifier, freeze, load_checkpoint, load_strict

MAIN = "realesr-general-x4v3.pth"
WDN = "realesr-general-wdn-x4v3.pth"
RELEASE = "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/"
PREFER = ("params", "params_ema", "state_dict", "model")   # DNI blends 'params', as Real-ESRGAN's dni()
SCALE = 4


class SRVGGNetCompact(nn.Module):
    """Compact VGG-style ×``upscale`` super-resolution net; all convolutions at low resolution."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 32,
                 upscale: int = SCALE):
        super().__init__()
        self.upscale = upscale
        layers: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(layers)

    def forward(self, x):
        out = x
        for layer in self.body:
            out = layer(out)
        base = F.interpolate(x, scale_factor=self.upscale, mode="nearest")
        return F.pixel_shuffle(out, self.upscale) + base


def dni(state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], weights) -> dict[str, torch.Tensor]:
    """Deep network interpolation (Wang et al., CVPR 2019): ``wa·a + wb·b`` key by key."""
    wa, wb = weights
    if set(state_a) != set(state_b):
        diff = sorted(set(state_a) ^ set(state_b))
        raise InputError(f"realesrgan: the two models to blend have different keys: {', '.join(diff[:5])}")
    return {k: wa * v.float() + wb * state_b[k].float() for k, v in state_a.items()}


def _pos_int(value, name: str, hi: int = MAX_WIDTH) -> int:
    """A width or depth of the network: 1..``limits.MAX_WIDTH`` (channels) or ``MAX_DEPTH`` (blocks)."""
    return int_in(value, name, 1, hi)


@DEFENSES.register("realesrgan")
class RealESRGAN(LearnedPurifier):
    """Real-ESRGAN general x4v3 (DNI with the wdn model), resized to ``outscale`` × the input.

    ``weights`` / ``wdn_weights``: paths to ``realesr-general-x4v3.pth`` and
    ``realesr-general-wdn-x4v3.pth`` (empty: ``$IQAGUARD_WEIGHTS`` / the package; not shipped).
    ``num_feat`` / ``num_conv`` must match the files (published: 64 / 32).
    """

    def __init__(self, weights: str = "", wdn_weights: str = "", denoise_strength: float = 0.2,
                 outscale: float = 1.0, num_feat: int = 64, num_conv: int = 32):
        for name, v in (("weights", weights), ("wdn_weights", wdn_weights)):
            if not isinstance(v, str):
                raise InputError(f"{name} must be a file path (str), got {v!r}")
        if (isinstance(denoise_strength, bool) or not isinstance(denoise_strength, Real)
                or not 0.0 <= float(denoise_strength) <= 1.0):
            raise InputError(f"denoise_strength must be a number in [0, 1], got {denoise_strength!r}")
        if (isinstance(outscale, bool) or not isinstance(outscale, Real) or not math.isfinite(float(outscale))
                or not 0 < float(outscale) <= SCALE):
            raise InputError(f"outscale must be a number in (0, {SCALE}], got {outscale!r}")
        self.weights, self.wdn_weights = weights, wdn_weights
        self.denoise_strength = float(denoise_strength)
        self.outscale = float(outscale)
        self.num_feat = _pos_int(num_feat, "num_feat")
        self.num_conv = _pos_int(num_conv, "num_conv", MAX_DEPTH)
        self.changes_size = self.outscale != 1.0

        main = load_checkpoint(MAIN, path=weights, source=RELEASE + MAIN, prefer=PREFER)
        if self.denoise_strength != 1.0:   # Real-ESRGAN skips the blend at strength 1
            wdn = load_checkpoint(WDN, path=wdn_weights, source=RELEASE + WDN, prefer=PREFER)
            main = dni(main, wdn, (self.denoise_strength, 1.0 - self.denoise_strength))
        self.net = SRVGGNetCompact(num_feat=self.num_feat, num_conv=self.num_conv)
        load_strict(self.net, main, "realesrgan")
        freeze(self.net)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """``int(h·outscale), int(w·outscale)`` as Real-ESRGAN's ``enhance`` (at least 1 px)."""
        return max(1, int(h * self.outscale)), max(1, int(w * self.outscale))

    def transform(self, x, gens):
        h, w = x.shape[-2:]
        y = self._net_on(x)(x)
        size = self.out_size(h, w)
        if size != tuple(y.shape[-2:]):
            y = F.interpolate(y, size=size, mode="bicubic", align_corners=False, antialias=True)
        return y.clamp(0, 1)
