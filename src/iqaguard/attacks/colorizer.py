"""The user-guided colourisation network the ``cadv`` attack steers: (L, ab hints, hint mask) → ab.

Why: cAdv (Bhattad et al., "Unrestricted Adversarial Examples via Semantic Manipulation",
ICLR 2020) does not move pixels; it moves the colour *hints* of a colourisation network and keeps
the image's lightness. The study loads the network of Zhang et al., "Real-Time User-Guided Image
Colorization with Learned Deep Priors" (SIGGRAPH 2017) from ``cadv-colorization-model.pth``;
iqaguard ships instead a small U-Net with the same interface and input conventions, trained by
``scripts/train_colorizer.py`` on the bundled photos (seeded, CPU, minutes), so the attack runs
offline. A user's own retrained file of *this* architecture can be passed as ``weights``; the
original SIGGRAPH17 checkpoint is a different (VGG-sized) architecture and is not loadable.

Conventions (Zhang et al. 2017, as in their code): Lab with L ∈ [0, 100] and ab in Lab units;
the network sees ``(L − 50)/100``, ``ab/110`` for hints (0 where there is no hint) and the mask
centred as ``mask − 0.5`` (−0.5 = no hint, +0.5 = hint) and predicts ``ab/110`` through tanh.
Any H×W works: inputs are replicate-padded to a multiple of 4 (two 2× poolings) and the output
cropped back.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..weights import load_state, resolve

L_CENT, L_NORM, AB_NORM, MASK_CENT = 50.0, 100.0, 110.0, 0.5   # Zhang et al. 2017 normalisation
WIDTHS = (16, 32, 64)
WEIGHTS_FILE = "cadv-colorizer.safetensors"
# SHA-256 of the shipped file; written by scripts/train_colorizer.py
WEIGHTS_SHA256 = "6e9e0a34e4a3278898c141c6ab19c0c6a1edb7d1f29fdaf2707aaa73adeaad9c"


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class ColorUNet(nn.Module):
    """Three-level U-Net (Ronneberger et al. 2015 layout: double 3×3 convs, max-pool down,
    bilinear up + skip concatenation). Input 4 channels (L, hint a, hint b, mask), output 2 (ab)."""

    def __init__(self, widths: tuple[int, int, int] = WIDTHS):
        super().__init__()
        w1, w2, w3 = widths
        self.enc1 = _double_conv(4, w1)
        self.enc2 = _double_conv(w1, w2)
        self.mid = _double_conv(w2, w3)
        self.dec2 = _double_conv(w3 + w2, w2)
        self.dec1 = _double_conv(w2 + w1, w1)
        self.out = nn.Conv2d(w1, 2, 1)

    def forward(self, l_norm: torch.Tensor, hints: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Normalised inputs (see module docstring) → normalised ab (N,2,H,W) in (−1, 1)."""
        h, w = l_norm.shape[-2:]
        ph, pw = (-h) % 4, (-w) % 4
        z = torch.cat([l_norm, hints, mask], 1)
        if ph or pw:
            z = F.pad(z, (0, pw, 0, ph), mode="replicate")
        e1 = self.enc1(z)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([F.interpolate(m, scale_factor=2, mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False), e1], 1))
        return torch.tanh(self.out(d1))[..., :h, :w]


def load_colorizer(weights: str = "") -> ColorUNet:
    """The shipped colouriser (SHA-256 checked) or ``weights``, a path to a file of the same
    architecture (safetensors or a torch state dict; not checked). Frozen, in eval mode."""
    if not isinstance(weights, str):
        raise InputError(f"weights must be a path string ('' = shipped colouriser), got {weights!r}")
    if weights and not Path(weights).is_file():
        raise InputError(f"weights file {weights!r} not found (a path to a ColorUNet state dict; '' = shipped)")
    path = resolve(WEIGHTS_FILE, path=weights or None, sha256=None if weights else WEIGHTS_SHA256,
                   source="train with scripts/train_colorizer.py")
    net = ColorUNet()
    state = {k: v.float() for k, v in load_state(path).items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise InputError(f"weights {str(path)!r} do not fit the cadv colouriser (iqaguard ColorUNet; "
                         f"the original SIGGRAPH17 checkpoint is not supported): {exc}") from None
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
