"""cAdv, the colourisation attack (Bhattad et al., "Unrestricted Adversarial Examples via
Semantic Manipulation", ICLR 2020), as the study runs it on IQA metrics.

Why: it changes only colour. The image's Lab lightness L is kept; a user-guided colourisation
network (Zhang et al., SIGGRAPH 2017; here iqaguard's shipped :mod:`.colorizer`) recolours it from
a dense field of ab *hints* and a hint *mask*, and Adam moves those hints and that mask so the
recoloured image scores better (the standard objective, :meth:`Attack.gain`).

Procedure (formulas only, no code copied; the study's ``cadv`` and Bhattad et al.'s release):

1. Start from the clean image, as cAdv does: cluster its ab (Gaussian-blurred, σ = 3) into
   ``clusters`` groups with k-means (seeded; 10 Lloyd iterations), rank the clusters by how sure
   the colouriser is there without hints and keep the ``k`` surest; ``hints`` random pixels of
   those clusters get their true ab as hints and mask +0.5, all other pixels hint 0, mask −0.5.
   Departure: cAdv ranks clusters by the entropy of its classification-head colour distribution
   (lowest first); iqaguard's colouriser is a regression net without that head, so the
   "sureness" is its no-hint ab error (lowest first).
2. ``steps`` Adam iterations (study: 10, β = (0.9, 0.999), learning rate ``lr``) on hints and mask
   (every pixel; clamped to [−1, 1] and [−0.5, 0.5] as the network sees them), maximising the
   gain of ``x_adv = Lab→RGB(clean L, predicted ab)``. The result is rendered after the last step
   (the study returns the image of the last gradient evaluation, i.e. after steps − 1 updates).
3. Colours the network predicts outside the sRGB gamut are pulled toward grey per pixel (ab ×
   s, s ∈ [0, 1] the largest in-gamut factor, bisection, not differentiated) instead of
   clipping RGB, so L stays the clean L (clipping would change it).

Sizes: any H×W; the colouriser pads to a multiple of 4 and crops back, so every pixel is
recoloured and the output keeps the input size (the study crops the top-left multiple-of-4 part
and leaves the last rows/columns unattacked). Threat ``"color"``; budget = ``lr``.
"""
from __future__ import annotations

import torch
from kornia.color import lab_to_rgb, rgb_to_lab
from kornia.filters import gaussian_blur2d

from ..errors import InputError
from ..registry import ATTACKS
from . import _checks as check
from .base import Attack
from .colorizer import AB_NORM, L_CENT, L_NORM, MASK_CENT, load_colorizer

BLUR_SIGMA = 3.0       # cAdv: ab blurred with σ = 3 before clustering
KMEANS_ITERS = 10
GAMUT_TOL = 1e-4       # sRGB slack accepted as in gamut (removed by the final clamp)
BISECTIONS = 14


def kmeans(points: torch.Tensor, clusters: int, seed: int, iters: int = KMEANS_ITERS) -> torch.Tensor:
    """Batched Lloyd k-means: points (N,P,D) → labels (N,P). Initial centres are distinct random
    points (one generator per image seeded with ``seed``, so an image's clusters do not depend on
    the batch it is in); an emptied cluster keeps its centre."""
    n, p, _ = points.shape
    idx = torch.stack([torch.randperm(p, generator=torch.Generator().manual_seed(seed))[:clusters]
                       for _ in range(n)]).to(points.device)
    centres = torch.gather(points, 1, idx[..., None].expand(-1, -1, points.shape[2]))
    for _ in range(iters):
        labels = torch.cdist(points, centres).argmin(2)
        onehot = torch.nn.functional.one_hot(labels, centres.shape[1]).to(points.dtype)   # (N,P,C)
        count = onehot.sum(1)[..., None]
        sums = onehot.transpose(1, 2) @ points
        centres = torch.where(count > 0, sums / count.clamp_min(1), centres)
    return torch.cdist(points, centres).argmin(2)


def gamut_scale(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Per pixel the largest s ∈ [0, 1] (to 2⁻¹⁴) with Lab (L, s·ab) inside the sRGB cube."""
    def inside(s):
        rgb = lab_to_rgb(torch.cat([L, ab * s], 1), clip=False)
        return ((rgb >= -GAMUT_TOL) & (rgb <= 1 + GAMUT_TOL)).all(1, keepdim=True)

    with torch.no_grad():
        lo, hi = torch.zeros_like(L), torch.ones_like(L)
        done = inside(hi)
        for _ in range(BISECTIONS):
            mid = (lo + hi) / 2
            ok = inside(mid)
            lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
        return torch.where(done, hi, lo)


@ATTACKS.register("cadv")
class CAdv(Attack):
    """cAdv: Adam on the colour hints and mask of a colourisation net; L kept, only chroma changes.

    ``lr`` (default 5e-4, the study's) is the budget; ``steps`` 10 (study); ``hints``/``clusters``
    /``k`` = 50 / 8 / 4 are cAdv's initial-hint settings as the study uses them; ``seed`` fixes
    the k-means start and the hint draw; ``weights``: '' = shipped colouriser, else a path to a
    file of the same architecture (see :mod:`.colorizer`).
    """

    threat = "color"
    budget_param = "lr"

    def __init__(self, lr: float = 0.0005, steps: int = 10, hints: int = 50, clusters: int = 8, k: int = 4,
                 seed: int = 0, weights: str = "", direction: str = "better", target: float | None = None):
        super().__init__(direction=direction, target=target)
        self.lr = check.lr(lr)
        self.steps = check.steps(steps, minimum=0)
        self.hints = check.integer(hints, "hints", maximum=check.MAX_SIDE ** 2)
        self.clusters = check.integer(clusters, "clusters", maximum=check.MAX_SIDE ** 2)
        self.k = check.integer(k, "k")
        if self.k > self.clusters:
            raise InputError(f"k must be <= clusters ({self.clusters}), got {k!r}")
        self.seed = check.integer(seed, "seed", minimum=0, maximum=check.limits.MAX_SEED)
        if not isinstance(weights, str):
            raise InputError(f"weights must be a path string ('' = shipped colouriser), got {weights!r}")
        self.weights = weights
        self.net = load_colorizer(weights)   # fails early on a missing or unfit file

    @property
    def budget(self) -> float:
        """The Adam learning rate on the hints and mask (the study's ``lr``)."""
        return self.lr

    # -- pieces ---------------------------------------------------------------------------
    def colorize(self, L: torch.Tensor, hints: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted ab (Lab units) from L ∈ [0,100], normalised hints and centred mask."""
        return self.net((L - L_CENT) / L_NORM, hints.clamp(-1, 1), mask.clamp(-MASK_CENT, MASK_CENT)) * AB_NORM

    def render(self, L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
        """RGB of (L, ab) with out-of-gamut colours desaturated toward grey (L unchanged)."""
        s = gamut_scale(L.detach(), ab.detach())
        return lab_to_rgb(torch.cat([L, ab * s], 1), clip=False).clamp(0, 1)

    def initial_hints(self, L: torch.Tensor, ab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cAdv's start: true ab at ``hints`` pixels of the ``k`` surest ab clusters (see module)."""
        n, _, h, w = ab.shape
        side = 2 * int(3 * BLUR_SIGMA) + 1
        blurred = gaussian_blur2d(ab, (side, side), (BLUR_SIGMA, BLUR_SIGMA), border_type="replicate")
        clusters = min(self.clusters, h * w)
        labels = kmeans(blurred.flatten(2).transpose(1, 2), clusters, self.seed)            # (N, HW)
        with torch.no_grad():
            free = self.colorize(L, torch.zeros_like(ab), torch.full_like(L, -MASK_CENT))
        err = (free - ab).abs().sum(1).flatten(1)                                      # (N, HW)
        onehot = torch.nn.functional.one_hot(labels, clusters).float()
        count = onehot.sum(1)
        mean_err = torch.where(count > 0, (onehot * err[..., None]).sum(1) / count.clamp_min(1),
                               torch.full_like(count, float("inf")))
        chosen = mean_err.argsort(1)[:, :min(self.k, clusters)]                        # (N, k)
        candidate = (labels[..., None] == chosen[:, None, :]).any(2)                   # (N, HW)
        # per-image draws (seed + 1 so they differ from the k-means start): batch-independent
        score = torch.stack([torch.rand(h * w, generator=torch.Generator().manual_seed(self.seed + 1))
                             for _ in range(n)]).to(ab.device)
        score = torch.where(candidate, score, torch.full_like(score, -1.0))
        top = score.topk(min(self.hints, h * w), dim=1)
        pick = torch.zeros(n, h * w, dtype=torch.bool, device=ab.device)
        pick.scatter_(1, top.indices, top.values >= 0)
        pick = pick.view(n, 1, h, w)
        hints = torch.where(pick, ab / AB_NORM, torch.zeros_like(ab))
        mask = torch.where(pick, MASK_CENT, -MASK_CENT).to(L.dtype)
        return hints, mask

    # -- attack ---------------------------------------------------------------------------
    def perturb(self, metric, x, ref):
        net_device = next(self.net.parameters()).device
        if net_device != x.device:
            self.net.to(x.device)
        lab = rgb_to_lab(x)
        L, ab = lab[:, :1], lab[:, 1:]
        hints, mask = self.initial_hints(L, ab)
        hints.requires_grad_(True)
        mask.requires_grad_(True)
        opt = torch.optim.Adam([hints, mask], lr=self.lr, betas=(0.9, 0.999))
        for _ in range(self.steps):
            x_adv = self.render(L, self.colorize(L, hints, mask))
            _, grad = self.gain_and_grad(metric, x_adv, ref)
            opt.zero_grad()
            x_adv.backward(-grad)          # minimise −gain through the colouriser
            opt.step()
        with torch.no_grad():
            return self.render(L, self.colorize(L, hints, mask))
