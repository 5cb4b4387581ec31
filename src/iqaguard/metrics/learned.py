"""Learned no-reference metrics trained by the project: ``iqg-cnn`` and ``iqg-resnet``.

Why: the benchmark needs CNN-based NR metrics — the kind that adversarial attacks move easily —
that ship with the package, with weights it can reproduce (``scripts/train_learned_metrics.py``,
fixed seed, CPU, minutes) instead of downloading. Both learn, as in BIECON (Kim & Lee 2017,
"Fully deep blind image quality predictor"), what a full-reference metric sees: the target of a
distorted image is its MS-SSIM (RGB) against the pristine original, in decibels
(−10·log10(1 − MS-SSIM), clipped to [0, 40] dB) scaled ×2.5 to [0, 100]. See
docs/methods/learned_metrics.md for data, training and measured accuracy.

- ``iqg-cnn``: CNNIQA-sized (Kang et al. 2014, "Convolutional Neural Networks for No-Reference
  Image Quality Assessment"): one 7×7 convolution (50 filters) over non-overlapping 32×32
  patches, max + min pooling per patch, two fully connected layers, patch scores averaged.
  Departure: RGB input without local contrast normalisation (which would hide the brightness,
  contrast and colour distortions of the bundled suite); FC width 200 instead of 800.
- ``iqg-resnet``: a small ResNet (He et al. 2016, basic blocks, BatchNorm folded at eval time
  as an affine), ResNet stem, three stride-2 stages and an identity block, global average pooling, MLP head;
  ~2.4 M parameters.

Both take N×3×H×W in [0,1] with H, W ≥ 64, return (N,) float32, higher = better.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..registry import METRICS
from ..weights import load_state, resolve
from .base import Metric

MIN_SIZE = 64
PATCH = 32      # CNNIQA patch side (Kang et al. 2014)

# SHA-256 of the shipped weights; written by scripts/train_learned_metrics.py
SHA256 = {
    "iqg-cnn": "6c108e6227f8816880e901c791f748e685b807f60290c48e9ff69e692d46e393",
    "iqg-resnet": "64e5d9bf9af4fa88e7571de324334c637e385013c4b4b4cd423e58639764d282",
}


class CNNIQANet(nn.Module):
    """Kang et al. 2014: conv 7×7 → per-patch max & min pooling → FC → FC → score, averaged."""

    def __init__(self, filters: int = 50, hidden: int = 200):
        super().__init__()
        self.conv = nn.Conv2d(3, filters, 7)
        # fully connected layers applied per patch as 1×1 convolutions
        self.fc1 = nn.Conv2d(2 * filters, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, hidden, 1)
        self.out = nn.Conv2d(hidden, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x - 0.5)
        # a 26×26 window every 32 px of the valid conv output is exactly the conv output of the
        # non-overlapping 32×32 patch at that position
        k = PATCH - self.conv.kernel_size[0] + 1
        mx = F.max_pool2d(f, k, stride=PATCH)
        mn = -F.max_pool2d(-f, k, stride=PATCH)
        h = F.relu(self.fc1(torch.cat([mx, mn], 1)))
        h = F.relu(self.fc2(h))
        return self.out(h).mean((1, 2, 3))


class _Block(nn.Module):
    """Basic residual block (two 3×3 convs); a 1×1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 2):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.proj = stride != 1 or cin != cout
        if self.proj:
            self.sc = nn.Conv2d(cin, cout, 1, stride, bias=False)
            self.bs = nn.BatchNorm2d(cout)

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        skip = self.bs(self.sc(x)) if self.proj else x
        return F.relu(self.b2(self.c2(h)) + skip)


class ResNetIQANet(nn.Module):
    """ResNet stem (7×7 stride 2, 3×3 max-pool stride 2) → 3 stride-2 stages and one identity
    block → global mean → MLP → score. Thin early stages keep CPU training cheap; the parameters
    sit in the low-resolution last stage."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), hidden: int = 128):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(), nn.MaxPool2d(3, 2, 1))
        blocks = [_Block(a, b) for a, b in zip(widths[:-1], widths[1:])]
        self.stages = nn.Sequential(*blocks, _Block(widths[-1], widths[-1], stride=1))
        self.fc1 = nn.Linear(widths[-1], hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x - 0.5)).mean((2, 3))
        return self.out(F.relu(self.fc1(h))).squeeze(1)


ARCHS = {"iqg-cnn": CNNIQANet, "iqg-resnet": ResNetIQANet}


def build_net(name: str) -> nn.Module:
    """A freshly initialised network of the learned metric ``name`` (used by the training script)."""
    if name not in ARCHS:
        raise InputError(f"unknown learned metric {name!r}; valid: {', '.join(ARCHS)}")
    return ARCHS[name]()


class _LearnedNR(Metric):
    mode = "NR"
    lower_better = False
    differentiable = True
    key = ""

    def __init__(self, weights: str = ""):
        super().__init__()
        if not isinstance(weights, str):
            raise InputError(f"weights must be a path string ('' = shipped weights), got {weights!r}")
        self.weights = weights
        self.net = build_net(self.key)
        filename = f"{self.key}.safetensors"
        # the SHA is checked only for the shipped file; a user-supplied path is their own model
        path = resolve(filename, path=weights or None, sha256=None if weights else (SHA256[self.key] or None),
                       source="train with scripts/train_learned_metrics.py")
        state = load_state(path)
        try:
            self.net.load_state_dict(state)
        except RuntimeError as exc:
            raise InputError(f"weights {str(path)!r} do not fit {self.key}: {exc}") from None
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):
        """Always eval: BatchNorm must use its running statistics so scores are per image."""
        super().train(False)
        return self

    def score(self, x: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIZE:
            raise InputError(f"x must be at least {MIN_SIZE}×{MIN_SIZE} px for {self.key}, got {h}×{w}")
        return self.net(x).float()


@METRICS.register("iqg-cnn")
class IQGCNN(_LearnedNR):
    """CNNIQA-style NR metric trained to predict MS-SSIM (dB, ×2.5) — higher is better."""

    key = "iqg-cnn"


@METRICS.register("iqg-resnet")
class IQGResNet(_LearnedNR):
    """Small-ResNet NR metric trained to predict MS-SSIM (dB, ×2.5) — higher is better."""

    key = "iqg-resnet"
