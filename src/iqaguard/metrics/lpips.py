"""LPIPS (Zhang, Isola, Efros, Shechtman & Wang 2018, "The unreasonable effectiveness of deep
features as a perceptual metric"), as released in the ``lpips`` package 0.1.4.

d(x, y) = Σ_l mean_hw( w_lᵀ (f̂_l(x) − f̂_l(y))² ), with f̂_l the channel-unit-normalised
activations (norm + 1e-10, as the package) of an ImageNet AlexNet (relu1..relu5) or VGG-16
(relu1_2, relu2_2, relu3_3, relu4_3, relu5_3) and w_l ≥ 0 the published 1×1 linear heads (no
bias). Input [0,1] is mapped to [−1,1], then (version 0.1) through the package's ScalingLayer.
Heads ship with iqaguard (safetensors copies of ``lpips/weights/v*/{alex,vgg}.pth``, BSD-2);
the backbone is torchvision's ImageNet checkpoint, found via :mod:`iqaguard.weights`.

The channel norm is the package's sqrt(Σ f²), except that its gradient at an all-zero feature
vector is 0 instead of NaN (``unit_normalize``).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import InputError
from ..registry import METRICS
from ..weights import load_state, resolve
from .backbones import alexnet_features, load_features, tap_pair, vgg16_features
from .base import Metric, score_ranges

# ScalingLayer of the lpips package (v0.1): (x − shift) / scale on [−1, 1] input
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10

NETS = {  # net -> (features factory, tap indices in torchvision's `features`, channels, min side)
    "alex": (alexnet_features, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256), 31),
    "vgg": (vgg16_features, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512), 16),
}
# SHA-256 of the shipped heads (written by scripts/convert_heads.py from lpips 0.1.4)
HEADS_SHA256 = {
    ("0.0", "alex"): "80a80e42cbe9362bad909dca6cfe526e861df68eb214922092cf0078cc15ed76",
    ("0.0", "vgg"): "3230cf6e1406bb39a36fdff0b95cb8fd2c3b7ccf6324aca36005326f9695658b",
    ("0.1", "alex"): "8ecc926366d5c315f4b61d0a6afb675e19fc58063201476679e1aa0042f17912",
    ("0.1", "vgg"): "00817d8dbfc2804ac7f97a9529db867bcb5c4b38460adf016c003eaf2084ad1e",
}


def unit_normalize(f: torch.Tensor) -> torch.Tensor:
    """f / (‖f‖₂ over channels + 1e-10), the package's ``normalize_tensor``.

    sqrt(Σ f²) as the package computes it (``linalg.vector_norm`` over the channel axis cost
    3-4× as much on CPU), with the square root taken of 1 where Σ f² = 0 and masked back to 0:
    same value, and a zero gradient there instead of sqrt's NaN.
    """
    s = f.pow(2).sum(1, keepdim=True)
    nonzero = s > 0
    return f / (torch.where(nonzero, s, 1.0).sqrt() * nonzero + EPS)


@METRICS.register("lpips")
class LPIPS(Metric):
    """LPIPS distance (FR, lower better; 0 for identical images).

    ``net``: ``"alex"`` (default, the package's default) or ``"vgg"``; ``version``: ``"0.1"``
    (default) or ``"0.0"`` (first arXiv release: no ScalingLayer, its own heads).
    ``backbone_weights``: path to torchvision's ImageNet checkpoint (default: found in
    $IQAGUARD_WEIGHTS or the torch hub cache); ``head_weights``: path to other linear heads
    (safetensors or .pth with keys ``lin{k}.model.1.weight``; default: the shipped ones).
    Needs ≥ 31 px per side for AlexNet, ≥ 16 for VGG (one pixel at the last tap).
    """

    mode = "FR"
    lower_better = True
    differentiable = True

    def __init__(self, net: str = "alex", version: str = "0.1", backbone_weights: str = "",
                 head_weights: str = ""):
        super().__init__()
        if net not in NETS:
            raise InputError(f"net must be one of {sorted(NETS)}, got {net!r}")
        # a string, not a number: spec strings parse version=0.1 as a float, and 0.1 vs '0.1'
        # would be two different cells in the store for one configuration
        if version not in ("0.0", "0.1") or not isinstance(version, str):
            raise InputError(f"version must be the string '0.1' or '0.0' (in a spec: version='0.0'), "
                             f"got {version!r}")
        self.net, self.version = net, version
        self.backbone_weights, self.head_weights = str(backbone_weights or ""), str(head_weights or "")
        factory, self.taps, chns, self.min_side = NETS[net]
        self.features = factory()
        load_features(net, self.features, self.backbone_weights, metric=f"lpips(net={net!r})")
        self.register_buffer("heads", self._load_heads(chns), persistent=False)   # (ΣC,)
        self.chns = chns
        # the study's bounds are per net (lpips-alex / lpips-vgg)
        self._score_range = score_ranges().get(f"lpips-{net}")
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def _load_heads(self, chns: tuple[int, ...]) -> torch.Tensor:
        if self.head_weights:
            path = Path(self.head_weights)
            if not path.is_file():
                raise InputError(f"head_weights {self.head_weights!r} is not a file")
        else:
            name = f"lpips_v{self.version}_{self.net}.safetensors"
            path = resolve(name, sha256=HEADS_SHA256[(self.version, self.net)],
                           source=f"lpips 0.1.4 lpips/weights/v{self.version}/{self.net}.pth")
        state = load_state(path)
        heads = []
        for k, c in enumerate(chns):
            w = state.get(f"lin{k}.model.1.weight")
            if w is None or w.numel() != c:
                raise InputError(f"head_weights {str(path)!r}: expected lin{k}.model.1.weight with {c} values")
            heads.append(w.detach().float().reshape(c))
        return torch.cat(heads)

    def score(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_side:
            raise InputError(f"lpips(net={self.net!r}) needs images of at least {self.min_side} px "
                             f"per side, got {tuple(x.shape[-2:])}")
        def scaled(t):
            t = t * 2 - 1
            return (t - self.shift) / self.scale if self.version == "0.1" else t

        heads = torch.split(self.heads, self.chns)
        total = x.new_zeros(x.shape[0])
        for (fx, fr), w in zip(tap_pair(self.features, scaled(x), scaled(ref), self.taps), heads):
            d = (unit_normalize(fx) - unit_normalize(fr)) ** 2
            total = total + torch.einsum("nchw,c->n", d, w) / (d.shape[-2] * d.shape[-1])
        return total

    def extra_repr(self) -> str:
        return f"net={self.net!r}, version={self.version!r}"
