"""NIQE (Mittal, Soundararajan & Bovik 2013, "Making a 'completely blind' image quality analyzer").

Follows the released MATLAB code (``computequality.m``, ``computefeature.m``,
``estimateaggdparam.m``): grey levels in [0, 255]; crop to a multiple of the 96-px patch;
MSCN coefficients with the 7×7 Gaussian window (σ = 7/6) and C = 1, 'replicate' borders; per
patch 18 features (AGGD fit of the MSCN coefficients and of their products with the 4
neighbours, circular shifts inside the patch) at two scales, the second after MATLAB
``imresize(·, 0.5)``; the MVG fitted to all patches (``nanmean``/``nancov``) is compared with the
published pristine model: sqrt((μp − μd)ᵀ pinv((Σp + Σd)/2) (μp − μd)).

Vectorised over images and patches (no Python loop per image or patch). Precision: the MSCN
step runs in float64 — σ² = E[g²] − μ² on grey levels up to 255 cancels catastrophically in flat
regions, where float32 rounding alone makes σ ≈ 0.05 instead of 0 and changes features; the
per-patch moment sums run in float32 (the bulk of the work), the fits and the distance in float64.

Differentiability: the released fit picks the shape α as the argmin of (r(α) − ρ)² over the
grid 0.2:0.001:10, with r(α) = Γ(2/α)²/(Γ(1/α)Γ(3/α)) and ρ the moment ratio. r is strictly
increasing, so α = r⁻¹(ρ). The forward value is the released grid argmin (bit-for-bit the same
choice); the backward pass uses the derivative of the piecewise-linear interpolation of the
inverse table, i.e. dα/dρ = 1/r′(α) up to the grid step (a straight-through estimator whose
surrogate is the exact continuous inverse). Outside the table's range α is clamped
(gradient 0), as the released lookup clamps.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
import io

import numpy as np
import torch

from .. import limits
from ..errors import InputError
from ..registry import METRICS
from .base import Metric
from .channels import check_channel, grey_levels
from .filters import filter_stack, imresize_half

NSS_CHANNELS = ("yiq", "gray", "y")
SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))       # computefeature.m: horizontal, vertical, two diagonals


@lru_cache(maxsize=1)
def pristine_params() -> dict[str, np.ndarray]:
    """Published NIQE pristine MVG (MATLAB release; file redistributed by BasicSR, Apache-2.0)."""
    raw = resources.files("iqaguard.tables").joinpath("niqe_pris_params.npz").read_bytes()
    with np.load(io.BytesIO(raw)) as z:
        return {k: np.array(z[k]) for k in z.files}


def gamma_table() -> tuple[torch.Tensor, torch.Tensor]:
    """(α grid 0.2:0.001:10, r(α)) in float64, as in ``estimateaggdparam.m``."""
    alpha = 0.2 + 0.001 * torch.arange(9801, dtype=torch.float64)
    lg = torch.lgamma
    r = torch.exp(2 * lg(2 / alpha) - lg(1 / alpha) - lg(3 / alpha))
    return alpha, r


def lookup_alpha(rho: torch.Tensor, alpha_grid: torch.Tensor, r_grid: torch.Tensor) -> torch.Tensor:
    """Grid argmin of (r − ρ)² in the forward pass, d r⁻¹/dρ (interpolated) in the backward pass."""
    n = r_grid.numel()
    idx = torch.searchsorted(r_grid, rho.detach())
    lo = (idx - 1).clamp(0, n - 1)
    hi = idx.clamp(0, n - 1)
    r_lo, r_hi, a_lo, a_hi = r_grid[lo], r_grid[hi], alpha_grid[lo], alpha_grid[hi]
    # ties go to the lower index, like MATLAB's min / numpy's argmin
    hard = torch.where((rho.detach() - r_lo) ** 2 <= (r_hi - rho.detach()) ** 2, a_lo, a_hi)
    span = r_hi - r_lo
    slope = torch.where(span > 0, (a_hi - a_lo) / torch.where(span > 0, span, torch.ones_like(span)),
                        torch.zeros_like(span))
    soft = a_lo + (rho - r_lo) * slope
    return soft + (hard - soft).detach()


def aggd_fit(v: torch.Tensor, alpha_grid: torch.Tensor, r_grid: torch.Tensor):
    """``estimateaggdparam.m`` over the last dim, vectorised. Returns float64 tensors
    (alpha, beta_l, beta_r, left_ok, right_ok); ``*_ok`` False where MATLAB gets NaN
    (no negative / no positive values). MATLAB's ``min`` over an all-NaN vector returns index 1,
    so α = 0.2 there; we reproduce that.
    """
    with torch.no_grad():
        n_l, n_r = (v < 0).sum(-1), (v > 0).sum(-1)
    left_ok, right_ok = n_l > 0, n_r > 0
    m = v.shape[-1]
    vn = v.clamp(max=0)
    dot = torch.linalg.vecdot                         # fused multiply-sum: one pass, no temporaries
    sum_sq = dot(v, v).double()
    sum_l = dot(vn, vn).double()
    sum_r = (sum_sq - sum_l).clamp_min(0)
    mean_abs = (dot(v, v.sign().detach()).double()) / m
    mean_sq = sum_sq / m
    tiny = 1e-300
    left_std = torch.sqrt((sum_l / n_l.clamp_min(1)).clamp_min(tiny))
    right_std = torch.sqrt((sum_r / n_r.clamp_min(1)).clamp_min(tiny))
    g = left_std / right_std
    rhat = mean_abs ** 2 / mean_sq.clamp_min(tiny)
    rhatnorm = rhat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    ok = left_ok & right_ok
    rhatnorm = torch.where(ok, rhatnorm, torch.full_like(rhatnorm, -1.0))   # -1 → grid index 0
    alpha = lookup_alpha(rhatnorm, alpha_grid, r_grid)
    scale = torch.exp(0.5 * (torch.lgamma(1 / alpha) - torch.lgamma(3 / alpha)))
    return alpha, left_std * scale, right_std * scale, left_ok, right_ok


def patch_features(mscn: torch.Tensor, patch: int, alpha_grid, r_grid):
    """18 features per patch (``computefeature.m``) and their validity, both N×P×18."""
    n, _, h, w = mscn.shape
    nh, nw = h // patch, w // patch
    blocks = mscn.reshape(n, nh, patch, nw, patch).permute(0, 1, 3, 2, 4).reshape(n, nh * nw, patch, patch)
    pairs = [blocks] + [blocks * torch.roll(blocks, s, dims=(-2, -1)) for s in SHIFTS]
    a, bl, br, lok, rok = aggd_fit(torch.stack(pairs, 2).flatten(3), alpha_grid, r_grid)   # N×P×5
    feats = [a[..., 0], (bl[..., 0] + br[..., 0]) / 2]
    valid = [torch.ones_like(lok[..., 0]), lok[..., 0] & rok[..., 0]]
    for j in range(1, 5):
        aj = a[..., j]
        ratio = torch.exp(torch.lgamma(2 / aj) - torch.lgamma(1 / aj))
        feats += [aj, (br[..., j] - bl[..., j]) * ratio, bl[..., j], br[..., j]]
        valid += [torch.ones_like(lok[..., j]), lok[..., j] & rok[..., j], lok[..., j], rok[..., j]]
    return torch.stack(feats, -1), torch.stack(valid, -1)


def mvg_distance(feat: torch.Tensor, valid: torch.Tensor, mu_p: torch.Tensor, cov_p: torch.Tensor) -> torch.Tensor:
    """NIQE distance per image; ``nanmean`` per feature and ``nancov`` over complete patches."""
    v = valid.to(feat.dtype)
    feat = torch.where(valid, feat, torch.zeros_like(feat))
    mu_d = (feat * v).sum(1) / v.sum(1).clamp_min(1)                         # N×36
    rows = valid.all(-1, keepdim=True).to(feat.dtype)                         # N×P×1
    n_rows = rows.sum(1, keepdim=True)
    centred = (feat - (feat * rows).sum(1, keepdim=True) / n_rows.clamp_min(1)) * rows
    cov_d = centred.transpose(1, 2) @ centred / (n_rows - 1).clamp_min(1)    # N×36×36
    d = (mu_p - mu_d).unsqueeze(-1)
    inv = torch.linalg.pinv((cov_p + cov_d) / 2, hermitian=True)
    q = (d.transpose(1, 2) @ inv @ d).reshape(-1)
    return torch.sqrt(q.clamp_min(1e-30))


@METRICS.register("niqe")
class NIQE(Metric):
    """NIQE (lower better) with the published pristine model.

    Defaults are pyiqa's ``niqe``: the Y of YIQ (``channel='yiq'``) rounded to integer grey levels
    (``quantize=True``; straight-through gradient). ``channel='gray'`` is MATLAB ``rgb2gray`` (the
    released code, which reads uint8 images: add ``quantize=true``), ``'y'`` the ``rgb2ycbcr`` Y
    (BasicSR). Needs at least one patch per side and two patches in total (the patch covariance
    needs two samples), i.e. ≥ 96×192 by default.
    """

    mode = "NR"
    lower_better = True
    differentiable = True

    def __init__(self, channel: str = "yiq", patch_size: int = 96, quantize: bool = True):
        super().__init__()
        check_channel(channel, NSS_CHANNELS)
        if limits.integer(patch_size, "patch_size", 8, limits.MAX_SIDE) % 2:
            raise InputError(f"patch_size must be an even integer ≥ 8, got {patch_size!r}")
        self.channel, self.patch_size, self.quantize = channel, int(patch_size), bool(quantize)
        p = pristine_params()
        win = torch.from_numpy(p["gaussian_window"])
        # the released 7×7 window is fspecial('gaussian', 7, 7/6): rank 1, so its row sums are the 1-D factor
        self.register_buffer("window1d", win.sum(1), persistent=False)          # float64, see mscn
        self.register_buffer("mu_pris", torch.from_numpy(p["mu_pris_param"]).reshape(-1), persistent=False)
        self.register_buffer("cov_pris", torch.from_numpy(p["cov_pris_param"]), persistent=False)
        a, r = gamma_table()
        self.register_buffer("alpha_grid", a, persistent=False)
        self.register_buffer("r_grid", r, persistent=False)

    def mscn(self, g: torch.Tensor) -> torch.Tensor:
        """(g − μ)/(σ + 1), 'replicate' borders, float64 in → float32 out (see module docstring)."""
        mu, g2 = filter_stack([g, g * g], self.window1d, "replicate")
        var = g2 - mu * mu
        sigma = torch.sqrt(var.abs().clamp_min(1e-12))    # floor keeps the gradient of sqrt finite
        return ((g - mu) / (sigma + 1)).float()

    def score(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        p = self.patch_size
        h, w = x.shape[-2:]
        nh, nw = h // p, w // p
        if nh < 1 or nw < 1 or nh * nw < 2:
            raise InputError(f"niqe needs at least two {p}×{p} patches (≥ {p}×{2 * p} px), got {h}×{w}")
        g = grey_levels(x, self.channel, self.quantize)[..., : nh * p, : nw * p]
        feats, valid = [], []
        for scale in (1, 2):
            f, v = patch_features(self.mscn(g), p // scale, self.alpha_grid, self.r_grid)
            feats.append(f)
            valid.append(v)
            if scale == 1:
                g = imresize_half(g)
        q = mvg_distance(torch.cat(feats, -1), torch.cat(valid, -1), self.mu_pris, self.cov_pris)
        return q.float()
