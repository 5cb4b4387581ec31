"""DISTS (Ding, Ma, Wang & Simoncelli 2020, "Image quality assessment: unifying structure and
texture similarity"), as released in ``DISTS_pytorch`` 0.1.

Features: ImageNet VGG-16 with every max pooling replaced by L2 pooling (√(g ∗ x²) + 1e-12
under the root, g = outer product of hanning(5)[1:-1] = (½, 1, ½) normalised to sum 1, stride 2,
padding 1), tapped at the input image and relu1_2 … relu5_3 (channels 3, 64, 128, 256, 512, 512);
input normalised with the ImageNet mean/std. Per channel of each stage, with global means μ,
variances σ² and covariance σ_xy:
  texture S1 = (2 μx μy + c1) / (μx² + μy² + c1), structure S2 = (2 σxy + c2) / (σx² + σy² + c2),
c1 = c2 = 1e-6; DISTS = 1 − Σ (α S1 + β S2) with α, β (published, ≥ 0) divided by Σα + Σβ.
α/β ship with iqaguard (safetensors copy of the package's ``weights.pt``, MIT); the backbone is
torchvision's ``vgg16-397923af.pth``, found via :mod:`iqaguard.weights`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..registry import METRICS
from ..weights import load_state, resolve
from .backbones import load_features, tap_pair, vgg16_features
from .base import Metric

CHANNELS = (3, 64, 128, 256, 512, 512)
TAPS = (3, 8, 15, 22, 29)                 # relu1_2 … relu5_3 in torchvision's vgg16().features
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
C1 = C2 = 1e-6
WEIGHTS_FILE = "dists_alpha_beta.safetensors"
WEIGHTS_SHA256 = "d4983f6a324be52cea6087fac776155a3bbd5e7c6abffbfb0c7d8f9a3558a55e"   # scripts/convert_heads.py


class L2Pool(nn.Module):
    """√(hanning-window blur of x², stride 2) — DISTS's replacement for max pooling.

    The 3×3 window is a non-persistent buffer, so the VGG state-dict keys stay torchvision's.
    """

    def __init__(self, channels: int):
        super().__init__()
        a = np.hanning(5)[1:-1]
        g = torch.tensor(np.outer(a, a) / np.outer(a, a).sum(), dtype=torch.float32)
        self.channels = channels
        self.register_buffer("window", g.expand(channels, 1, 3, 3).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.window, stride=2, padding=1, groups=self.channels)
        return torch.sqrt(out + 1e-12)


@METRICS.register("dists")
class DISTS(Metric):
    """DISTS distance (FR, lower better; 0 for identical images).

    ``backbone_weights``: path to torchvision's ``vgg16-397923af.pth`` (default: found in
    $IQAGUARD_WEIGHTS or the torch hub cache); ``head_weights``: path to other α/β weights
    (safetensors or .pt with keys ``alpha``, ``beta`` of 1475 values; default: the shipped ones).
    Works at any size; the package is applied without its optional resize to 256 px.
    """

    mode = "FR"
    lower_better = True
    differentiable = True

    def __init__(self, backbone_weights: str = "", head_weights: str = ""):
        super().__init__()
        self.backbone_weights, self.head_weights = str(backbone_weights or ""), str(head_weights or "")
        self.features = vgg16_features(pool=L2Pool)
        load_features("vgg", self.features, self.backbone_weights, metric="dists")
        alpha, beta = self._load_alpha_beta()
        total = alpha.sum() + beta.sum()
        self.register_buffer("alpha", alpha / total, persistent=False)
        self.register_buffer("beta", beta / total, persistent=False)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def _load_alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.head_weights:
            path = Path(self.head_weights)
            if not path.is_file():
                raise InputError(f"head_weights {self.head_weights!r} is not a file")
        else:
            path = resolve(WEIGHTS_FILE, sha256=WEIGHTS_SHA256, source="DISTS_pytorch 0.1 weights.pt")
        state = load_state(path)
        n = sum(CHANNELS)
        out = []
        for key in ("alpha", "beta"):
            w = state.get(key)
            if w is None or w.numel() != n:
                raise InputError(f"head_weights {str(path)!r}: expected {key!r} with {n} values")
            out.append(w.detach().float().reshape(n))
        return out[0], out[1]

    def score(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        feats = [(x, ref)] + tap_pair(self.features, (x - self.mean) / self.std, (ref - self.mean) / self.std, TAPS)
        s1 = []
        s2 = []
        for fx, fy in feats:
            mx, my = fx.mean((2, 3)), fy.mean((2, 3))
            vx = ((fx - mx[..., None, None]) ** 2).mean((2, 3))
            vy = ((fy - my[..., None, None]) ** 2).mean((2, 3))
            cxy = (fx * fy).mean((2, 3)) - mx * my
            s1.append((2 * mx * my + C1) / (mx * mx + my * my + C1))
            s2.append((2 * cxy + C2) / (vx + vy + C2))
        return 1 - (torch.cat(s1, 1) @ self.alpha + torch.cat(s2, 1) @ self.beta)
