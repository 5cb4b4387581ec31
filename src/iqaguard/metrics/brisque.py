"""BRISQUE (Mittal, Moorthy & Bovik 2012, "No-reference image quality assessment in the spatial domain").

Features as the released MATLAB code computes them (``brisquescore.m``, ``brisque_feature.m``,
``estimateggdparam.m``, ``estimateaggdparam.m``): grey levels in [0, 255] (the release's
``rgb2gray``; by default pyiqa's rounded YIQ luma, see ``BRISQUE``); MSCN
coefficients (I − μ)/(σ + 1) with the 7×7 Gaussian window σ = 7/6 normalised to sum 1 and
``filter2(…, 'same')`` — i.e. zero padding; a GGD fit of the MSCN map (shape, variance) and AGGD
fits of its products with the 4 circularly shifted neighbours (shape, mean, left and right
variance): 18 features, at two scales (the second after MATLAB ``imresize(·, 0.5)``, bicubic
antialiased). The 36 features are scaled to [−1, 1] with the model's feature ranges and fed to
the published ε-SVR (RBF): score = Σᵢ coefᵢ·exp(−γ‖svᵢ − f‖²) − ρ, libsvm's decision value.
Lower is better.

Model: ``tables/brisque_svr.npz``, converted by ``scripts/convert_brisque_model.py`` from the
``brisque`` PyPI package (Apache-2.0): its ``svm.txt`` is LIVE's ``allmodel`` (770 SVs, γ = 0.05,
ρ = −155.845, sha256 19526fb7…) and its ``normalize.pickle`` holds the ranges the LIVE C++ release
scales with. The MATLAB release's own ``allmodel``/``allrange`` (ρ = −153.591, used by piq/pyiqa)
is a different training run, so scores are comparable to that one only to a few points.

Differentiability: the shape fits are grid look-ups (0.2:0.001:10) as released; the backward pass
uses the interpolated inverse table (``niqe.lookup_alpha``). Everything runs in float64 on
whole images (one fit per image and map, batched), the score is returned in float32.
"""
from __future__ import annotations

import io
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

from ..errors import InputError
from ..registry import METRICS
from .base import Metric
from .channels import check_channel, grey_levels
from .filters import _half_bicubic_taps, filter_stack, gaussian_kernel1d, pad_symmetric, weighted_shifts
from .niqe import NSS_CHANNELS, SHIFTS, aggd_fit, gamma_table, lookup_alpha

MODEL_SHA256 = "19526fb799c4c7992ccc109fcfecddb25976ba024b194cd3ee275d27e8909c8d"   # svm.txt
MIN_SIDE = 16


@lru_cache(maxsize=1)
def svr_model() -> dict[str, np.ndarray]:
    """The published SVR and feature ranges (see module docstring)."""
    raw = resources.files("iqaguard.tables").joinpath("brisque_svr.npz").read_bytes()
    with np.load(io.BytesIO(raw)) as z:
        model = {k: np.array(z[k]) for k in z.files}
    if str(model["svm_sha256"]) != MODEL_SHA256:
        raise InputError("tables/brisque_svr.npz was not converted from the expected svm.txt")
    return model


def imresize_half_any(x: torch.Tensor) -> torch.Tensor:
    """MATLAB ``imresize(x, 0.5)`` (bicubic, antialiased, 'symmetric' border) for any H, W.

    Output pixel i (1-based) reads input pixels 2i−4 … 2i+3 whatever the parity, so an odd side
    just needs one more mirrored pixel after the end; the output has ceil(H/2) × ceil(W/2) pixels.
    """
    h, w = x.shape[-2:]
    x = pad_symmetric(x, 3, 3 + h % 2, 3, 3 + w % 2)
    taps = _half_bicubic_taps().tolist()
    oh, ow = (h + 1) // 2, (w + 1) // 2
    y = weighted_shifts(x, taps, -2, oh, step=2)
    return weighted_shifts(y, taps, -1, ow, step=2)


def ggd_fit(v: torch.Tensor, alpha_grid: torch.Tensor, rinv_grid: torch.Tensor):
    """``estimateggdparam.m`` over the last dim: (shape α, variance σ²).

    α = argmin |ρ − Γ(1/α)Γ(3/α)/Γ(2/α)²| with ρ = E[v²]/E[|v|]². That table decreases in α, so
    it is looked up negated (increasing) — ties still resolve to the smaller α, as MATLAB's min.
    """
    dot = torch.linalg.vecdot
    m = v.shape[-1]
    sigma_sq = dot(v, v) / m
    e_abs = dot(v, v.sign().detach()) / m
    rho = sigma_sq / (e_abs * e_abs).clamp_min(1e-300)
    return lookup_alpha(-rho, alpha_grid, -rinv_grid), sigma_sq


def nss_features(mscn: torch.Tensor, alpha_grid, r_grid, rinv_grid) -> torch.Tensor:
    """The 18 features of one scale (``brisque_feature.m``), N×18, from N×1×H×W MSCN maps."""
    flat = mscn.flatten(1)
    a0, var0 = ggd_fit(flat, alpha_grid, rinv_grid)
    pairs = torch.stack([(mscn * torch.roll(mscn, s, dims=(-2, -1))).flatten(1) for s in SHIFTS], 1)
    a, bl, br, _, _ = aggd_fit(pairs, alpha_grid, r_grid)          # N×4; bl = leftstd·√(Γ(1/α)/Γ(3/α))
    const = torch.exp(0.5 * (torch.lgamma(1 / a) - torch.lgamma(3 / a)))
    left, right = bl / const, br / const
    mean = (br - bl) * torch.exp(torch.lgamma(2 / a) - torch.lgamma(1 / a))   # (r − l)·Γ(2/α)/Γ(1/α)·const
    per_shift = torch.stack([a, mean, left * left, right * right], -1).flatten(1)   # N×16
    return torch.cat([a0[:, None], var0[:, None], per_shift], 1)


@METRICS.register("brisque")
class BRISQUE(Metric):
    """BRISQUE score with the published LIVE SVR (lower better; ≈0 pristine … ≈100 heavy distortion).

    Input as pyiqa's ``brisque``: the Y of YIQ (``channel='yiq'``) rounded to integer grey levels
    (``quantize=True``; straight-through gradient). ``channel='gray'`` is MATLAB ``rgb2gray`` (the
    release, which reads uint8 images: add ``quantize=true``), ``'y'`` the ``rgb2ycbcr`` Y. The
    SVR is the LIVE C++ release's, not the MATLAB release's that pyiqa downloads (module
    docstring). Needs at least 16×16 pixels.
    """

    mode = "NR"
    lower_better = True
    differentiable = True

    def __init__(self, channel: str = "yiq", quantize: bool = True):
        super().__init__()
        check_channel(channel, NSS_CHANNELS)
        self.channel, self.quantize = channel, bool(quantize)
        model = svr_model()
        self.register_buffer("window1d", gaussian_kernel1d(7, 7 / 6), persistent=False)
        a, r = gamma_table()
        self.register_buffer("alpha_grid", a, persistent=False)
        self.register_buffer("r_grid", r, persistent=False)
        lg = torch.lgamma
        self.register_buffer("rinv_grid", torch.exp(lg(1 / a) + lg(3 / a) - 2 * lg(2 / a)), persistent=False)
        for k in ("sv", "coef", "feat_min", "feat_max"):
            self.register_buffer(k, torch.from_numpy(model[k]), persistent=False)
        self.gamma, self.rho = float(model["gamma"]), float(model["rho"])

    def mscn(self, g: torch.Tensor) -> torch.Tensor:
        """(g − μ)/(σ + 1) with ``filter2(window, ·, 'same')`` (zero padding), float64."""
        mu, g2 = filter_stack([g, g * g], self.window1d, "constant")
        sigma = torch.sqrt((g2 - mu * mu).abs().clamp_min(1e-12))    # floor keeps sqrt's gradient finite
        return (g - mu) / (sigma + 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 36 unscaled features (N×36, float64) of images in [0, 1]."""
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise InputError(f"brisque needs images of at least {MIN_SIDE}×{MIN_SIDE} px, got {h}×{w}")
        g = grey_levels(x, self.channel, self.quantize)
        f1 = nss_features(self.mscn(g), self.alpha_grid, self.r_grid, self.rinv_grid)
        f2 = nss_features(self.mscn(imresize_half_any(g)), self.alpha_grid, self.r_grid, self.rinv_grid)
        return torch.cat([f1, f2], 1)

    def svr(self, feats: torch.Tensor) -> torch.Tensor:
        """Scale to [−1, 1] with the model's ranges, then libsvm's ε-SVR decision value."""
        z = -1 + 2 * (feats - self.feat_min) / (self.feat_max - self.feat_min)
        d2 = (z * z).sum(1, keepdim=True) - 2 * z @ self.sv.T + (self.sv * self.sv).sum(1)
        return torch.exp(-self.gamma * d2.clamp_min(0)) @ self.coef - self.rho

    def score(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        return self.svr(self.features(x)).float()
