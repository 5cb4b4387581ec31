"""ImageNet AlexNet and VGG-16 feature extractors for the deep FR metrics (LPIPS, DISTS).

Plain ``torch.nn`` re-implementations of torchvision's ``alexnet().features`` and
``vgg16().features`` (Krizhevsky 2014 "one weird trick" AlexNet; Simonyan & Zisserman 2015
configuration D) with the *same module indices*, so a torchvision checkpoint
(``alexnet-owt-7be5be79.pth``, ``vgg16-397923af.pth``) loads with ``strict=True`` on its
``features.*`` keys — without importing torchvision. The weights are large (233 MB / 528 MB),
are not shipped, and are found by :func:`iqaguard.weights.resolve` (explicit path →
``$IQAGUARD_WEIGHTS`` → the torch hub cache where torchvision keeps them).
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import InputError
from ..weights import load_state, resolve

# net -> (torchvision file name, where it is published)
CHECKPOINTS = {
    "alex": ("alexnet-owt-7be5be79.pth",
             "torchvision AlexNet_Weights.IMAGENET1K_V1, https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
    "vgg": ("vgg16-397923af.pth",
            "torchvision VGG16_Weights.IMAGENET1K_V1, https://download.pytorch.org/models/vgg16-397923af.pth"),
}

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def alexnet_features() -> nn.Sequential:
    """torchvision ``alexnet().features``: indices 0–12 (conv at 0, 3, 6, 8, 10)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    )


def vgg16_features(pool: Callable[[int], nn.Module] | None = None) -> nn.Sequential:
    """torchvision ``vgg16().features``: indices 0–30, pools at 4, 9, 16, 23, 30.

    ``pool(channels)`` replaces the 2×2 max pooling (DISTS uses L2 pooling); it must hold no
    persistent state so the state-dict keys stay torchvision's.
    """
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(pool(c_in) if pool else nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, v, 3, padding=1), nn.ReLU()]
            c_in = v
    return nn.Sequential(*layers)


def tap(features: nn.Sequential, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
    """Outputs of ``features`` after each index in ``taps`` (stops after the last one)."""
    out = []
    for i, layer in enumerate(features):
        x = layer(x)
        if i in taps:
            out.append(x)
            if len(out) == len(taps):
                break
    return out


def tap_pair(features: nn.Sequential, hx: torch.Tensor, href: torch.Tensor,
             taps: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(x feature, ref feature) at each of ``taps``.

    Without gradients one batched pass over [x; ref]. When only x needs a gradient, ref runs
    apart under no_grad: in a batched pass backward would also propagate through every layer
    for the ref half, twice the backward work of the ``lpips``/``DISTS_pytorch`` packages.
    """
    if torch.is_grad_enabled() and hx.requires_grad and not href.requires_grad:
        fx = tap(features, hx, taps)
        with torch.no_grad():
            fr = tap(features, href, taps)
        return list(zip(fx, fr))
    n = hx.shape[0]
    return [(f[:n], f[n:]) for f in tap(features, torch.cat([hx, href]), taps)]


@lru_cache(maxsize=2)
def _features_state(path: str, mtime: float, size: int) -> dict[str, torch.Tensor]:
    """The ``features.*`` tensors of a checkpoint; cached (keyed by file identity) so several
    metrics sharing a backbone read the 0.2–0.5 GB file once. mmap skips the classifier."""
    p = Path(path)
    if p.suffix == ".safetensors":
        state = load_state(p)
    else:
        try:
            state = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            state = load_state(p)     # e.g. a legacy (non-zip) file mmap cannot open; raises InputError
    if not isinstance(state, dict):
        raise InputError(f"backbone_weights {path!r} is not a state dict")
    feats = {k[len("features."):]: v.detach().float().clone()
             for k, v in state.items() if k.startswith("features.")}
    if not feats:
        raise InputError(f"backbone_weights {path!r} has no 'features.*' keys "
                         "(expected a torchvision AlexNet / VGG-16 state dict)")
    return feats


def load_features(net: str, features: nn.Sequential, path: str = "", metric: str = "") -> Path:
    """Fill ``features`` (from :func:`alexnet_features` / :func:`vgg16_features`) with ImageNet
    weights in torchvision's format and freeze it. Returns the file used.

    Raises InputError naming the file needed and where to put it when it cannot be found.
    """
    filename, source = CHECKPOINTS[net]
    if path and not Path(path).is_file():
        raise InputError(f"backbone_weights {path!r} is not a file (expected torchvision's {filename})")
    try:
        found = resolve(filename, path=path or None, source=source, torch_hub=True)
    except InputError as exc:
        raise InputError(f"{metric or 'metric'} needs the ImageNet backbone {filename!r} "
                         f"(parameter backbone_weights='/path/to/{filename}'): {exc}") from None
    st = os.stat(found)
    state = _features_state(str(found), st.st_mtime, st.st_size)
    try:
        features.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"backbone_weights {str(found)!r} does not match torchvision's "
                         f"{filename} layout: {str(exc).splitlines()[0]}") from None
    features.requires_grad_(False)
    return found
