"""DnCNN (Zhang et al., TIP 2017): the Gaussian denoiser of ``drs`` and ``dms``.

Depth 17: conv+ReLU, 15 × (conv+BatchNorm+ReLU), conv; residual learning — the network predicts
the noise and the denoised image is ``input − net(input)``. The study's DRS/DMS load a 64-channel
DnCNN (``best.pth`` of the denoised-smoothing code); ours is trained by ``scripts/train_dncnn.py``
at the smoothing σ on content disjoint from the bundled evaluation photos, with fewer channels
(``SHIPPED_CHANNELS``) so that 1000 noisy samples per image stay affordable on a CPU.
"""
from __future__ import annotations

import torch
from torch import nn

from ... import weights as _weights
from ...atomic import replacing
from ...errors import InputError
from ..purification._learned import freeze, load_strict

SHIPPED = "dncnn_sigma0.12.safetensors"
SHIPPED_SHA256 = "2d76b288e8636ac28a4062647169ab79f809f661eafa578b6c014bcc9c34288a"
SHIPPED_SIGMA = 0.12
SHIPPED_CHANNELS = 24
_META_CHANNELS = "iqaguard_dncnn_channels"
_META_SIGMA = "iqaguard_dncnn_sigma"


class DnCNN(nn.Module):
    """``forward(x) = x − residual(x)``; parameter names ``layers.<i>.*`` (one nn.Sequential)."""

    def __init__(self, channels: int = SHIPPED_CHANNELS, depth: int = 17, image_channels: int = 3):
        super().__init__()
        if depth < 3:
            raise InputError(f"DnCNN depth must be >= 3, got {depth}")
        mods: list[nn.Module] = [nn.Conv2d(image_channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            mods += [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                     nn.ReLU(inplace=True)]
        mods.append(nn.Conv2d(channels, image_channels, 3, padding=1, bias=False))
        nn.init.zeros_(mods[-1].weight)   # start at the identity (zero predicted noise)
        self.layers = nn.Sequential(*mods)
        self.channels, self.depth = channels, depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.layers(x)


def save_dncnn(net: DnCNN, path, sigma: float) -> None:
    from safetensors.torch import save_file

    with replacing(path) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(tmp),
                  metadata={_META_CHANNELS: str(net.channels), _META_SIGMA: repr(float(sigma))})


def load_dncnn(path: str = "") -> tuple[DnCNN, float]:
    """The shipped denoiser (SHA-256 checked) or a file at ``path``; returns (frozen net, its σ)."""
    from safetensors import safe_open

    file = _weights.resolve(SHIPPED, path=path or None, sha256=None if path else SHIPPED_SHA256,
                            source="shipped with iqaguard; rebuild with scripts/train_dncnn.py")
    if file.suffix != ".safetensors":
        raise InputError(f"DnCNN weights must be a .safetensors file written by scripts/train_dncnn.py, got {str(file)!r}")
    with safe_open(str(file), "pt") as f:
        meta = f.metadata() or {}
    channels = int(meta.get(_META_CHANNELS, SHIPPED_CHANNELS))
    sigma = float(meta.get(_META_SIGMA, SHIPPED_SIGMA))
    net = DnCNN(channels)
    load_strict(net, _weights.load_state(file), "dncnn")
    # channels-last weights make oneDNN run these 24-channel convolutions ~2x faster on CPU
    # (smoothing runs the net 1000+ times per image); outputs agree to float rounding (~5e-6)
    return freeze(net.to(memory_format=torch.channels_last)), sigma
