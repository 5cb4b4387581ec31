"""White-box attacks with a perceptual constraint: Korhonen et al., Zhang et al., SSAH and MADC.

Each keeps the change hard to see in its own way: Korhonen & You put it where texture hides it,
Zhang et al. add a full-reference (FR) penalty to the loss, SSAH pins the low-frequency band and
MADC moves on a fixed-RMSE level set. The defaults are the study's (reference/STUDY.md §2 and
``attack_presets.json`` "default_value" for ``lr``). Every step is clamped to [0,1].

Sources (formulas only; no code copied):
- Korhonen & You, "Adversarial Attacks against Blind Image Quality Assessment Models", QoEVMA 2022.
- Zhang et al., "Perceptual Attacks of No-Reference Image Quality Models with Human-in-the-Loop",
  NeurIPS 2022.
- Luo et al., "Frequency-driven Imperceptible Adversarial Attack on Semantic Similarity" (SSAH),
  CVPR 2022.
- Wang & Simoncelli, "Maximum differentiation (MAD) competition", Journal of Vision 2008.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from ..errors import InputError
from ..registry import ATTACKS, METRICS
from .base import Attack
from . import _checks as check
from .gradient import _per_image

RMSE_BOUND = 10 / 255






def activity_mask(x: torch.Tensor) -> torch.Tensor:
    """Korhonen & You's spatial-activity map, (N,1,H,W) in [0,1].

    Sobel gradient magnitude of the grey image (channel mean; replicate padding so a
    flat border stays zero), divided by its per-image maximum, then dilated with a 5×5 max
    filter so the mask also covers the pixels next to edges. Flat regions get exactly 0.
    """
    grey = x.mean(dim=1, keepdim=True)
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    kernels = torch.stack([k, k.t()]).unsqueeze(1)  # (2,1,3,3): d/dx, d/dy
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    mag = g.pow(2).sum(dim=1, keepdim=True).sqrt()
    peak = mag.amax(dim=(1, 2, 3), keepdim=True)
    mag = mag / torch.where(peak > 0, peak, torch.ones_like(peak))
    return F.max_pool2d(mag, kernel_size=5, stride=1, padding=2)


def haar_ll(x: torch.Tensor) -> torch.Tensor:
    """Low-frequency (LL) band of a one-level Haar DWT, as the 2×2 block average.

    (The orthonormal Haar LL is twice this; the factor only rescales the SmoothL1 term.) An odd
    last row/column has no partner and is dropped, as in a valid-mode DWT.
    """
    return F.avg_pool2d(x, kernel_size=2, stride=2)


class _AdamAttack(Attack):
    """Shared loop: Adam on the image pixels minimising ``penalty(x', x) − gain``, with an
    optional fixed per-pixel gradient mask, clamped to [0,1] after every step."""

    threat = "perceptual"

    def __init__(self, lr: float, steps: int, direction: str, target: float | None):
        super().__init__(direction=direction, target=target)
        self.lr = check.positive(lr, "lr")
        self.steps = check.integer(steps, "steps")

    @property
    def budget(self) -> float:
        """No norm ball: the constraint is perceptual (mask / FR penalty), so the budget is nan."""
        return float("nan")

    def penalty_grad(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor | None:
        """d(penalty)/dx' per image (None = no penalty)."""
        return None

    def mask(self, x: torch.Tensor) -> torch.Tensor | None:
        return None

    def perturb(self, metric, x, ref):
        mask = self.mask(x)
        x_adv = x.clone()
        opt = torch.optim.Adam([x_adv], lr=self.lr)
        for _ in range(self.steps):
            _, grad = self.gain_and_grad(metric, x_adv, ref)
            loss_grad = -grad
            pen = self.penalty_grad(x_adv, x)
            if pen is not None:
                loss_grad = loss_grad + pen
            if mask is not None:
                loss_grad = loss_grad * mask
            x_adv.grad = loss_grad.contiguous()
            opt.step()
            with torch.no_grad():
                x_adv.clamp_(0.0, 1.0)
        return x_adv.detach()


@ATTACKS.register("korhonen-et-al")
class KorhonenEtAl(_AdamAttack):
    """Korhonen & You 2022: Adam on the image for ``steps`` iterations with the gradient
    multiplied by :func:`activity_mask` of the clean image, so the change lands in textured
    regions where it is masked; where the map is 0 the pixel never moves (Adam's update of an
    all-zero gradient is exactly 0). ``lr`` default 0.005 is the study's."""

    def __init__(self, lr: float = 0.005, steps: int = 10, direction: str = "better",
                 target: float | None = None):
        super().__init__(lr, steps, direction, target)

    def mask(self, x):
        return activity_mask(x)


@ATTACKS.register("zhang-et-al")
class ZhangEtAl(_AdamAttack):
    """Zhang et al. 2022: Adam minimising ``D(x', x) − sign·score/range`` where D is the FR
    metric ``fr_metric`` (any iqaguard FR spec) turned into a distance: ``1 − FR`` for
    higher-better metrics (SSIM-like), ``FR`` for lower-better ones (DISTS, LPIPS). The FR
    metric is built at construction, so a missing weight file fails early."""

    def __init__(self, lr: float = 0.005, steps: int = 10, fr_metric: str = "ssim",
                 direction: str = "better", target: float | None = None):
        super().__init__(lr, steps, direction, target)
        if not isinstance(fr_metric, str) or not fr_metric.strip():
            raise InputError(f"fr_metric must be a metric spec string, got {fr_metric!r}")
        self.fr_metric = fr_metric
        self._fr = METRICS.create(fr_metric)
        if getattr(self._fr, "mode", "NR") != "FR":
            raise InputError(f"fr_metric must be a full-reference metric, got {fr_metric!r} "
                             f"(mode {getattr(self._fr, 'mode', '?')})")
        self._fr.eval()
        for p in self._fr.parameters():
            p.requires_grad_(False)

    def distance(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        s = self._fr(x_adv, x)
        return s if self._fr.lower_better else 1.0 - s

    def penalty_grad(self, x_adv, x):
        self._fr.to(x.device)
        xa = x_adv.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(self.distance(xa, x).sum(), xa)
        return torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)


@ATTACKS.register("zhang-et-al-dists")
class ZhangEtAlDISTS(ZhangEtAl):
    """The study's variant of :class:`ZhangEtAl`: the FR constraint is DISTS."""

    def __init__(self, lr: float = 0.005, steps: int = 10, fr_metric: str = "dists",
                 direction: str = "better", target: float | None = None):
        super().__init__(lr=lr, steps=steps, fr_metric=fr_metric, direction=direction, target=target)


@ATTACKS.register("ssah")
class SSAH(_AdamAttack):
    """SSAH (Luo et al. 2022) as adapted by the study: Adam minimising
    ``−gain + weight·SmoothL1(LL(x'), LL(x))`` with LL the Haar low band (:func:`haar_ll`),
    so the attack is pushed into high frequencies. SmoothL1 (β = 1) is averaged per image."""

    def __init__(self, lr: float = 0.001, steps: int = 10, weight: float = 0.1,
                 direction: str = "better", target: float | None = None):
        super().__init__(lr, steps, direction, target)
        self.weight = check.nonneg(weight, "weight")

    def penalty_grad(self, x_adv, x):
        if self.weight == 0:
            return None
        xa = x_adv.detach().requires_grad_(True)
        low = F.smooth_l1_loss(haar_ll(xa), haar_ll(x), reduction="none", beta=1.0)
        (g,) = torch.autograd.grad(self.weight * low.mean(dim=(1, 2, 3)).sum(), xa)
        return g


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image root-mean-square difference."""
    return (a - b).pow(2).mean(dim=(1, 2, 3)).sqrt()


@ATTACKS.register("madc")
class MADC(Attack):
    """MAD competition (Wang & Simoncelli 2008) as in the study: ``steps`` iterations, each one

    1. a step ``lr·(∇ − radial part)/RMS(∇)``: the metric gradient scaled to RMS ``lr``, with
       its component along ∇RMSE(x', x) ∝ δ removed (to first order the RMSE does not change),
    2. a correction back onto the level set: if RMSE(x', x) > ``bound``, δ is scaled to RMSE =
       ``bound`` (the nearest point, since ∇RMSE is parallel to δ), then clamped to [0,1]
       (clamping only shrinks |δ|, so RMSE ≤ bound still holds).

    The start is x itself (RMSE 0, ∇RMSE undefined → no projection), so the first step is a
    plain normalised gradient step of RMSE ``lr``; later steps slide along the sphere (growing
    RMSE only at second order) and the correction keeps it under the bound. Threat ``"l2"``; ``budget`` is the bound
    in RMSE units (ℓ2 norm = bound·sqrt(C·H·W)), default 10/255.
    """

    threat = "l2"

    def __init__(self, lr: float = 0.001, steps: int = 8, bound: float = RMSE_BOUND,
                 direction: str = "better", target: float | None = None):
        super().__init__(direction=direction, target=target)
        self.lr = check.positive(lr, "lr")
        self.steps = check.integer(steps, "steps")
        self.bound = check.nonneg(bound, "bound")

    @property
    def budget(self) -> float:
        return self.bound

    def perturb(self, metric, x, ref):
        x_adv = x.clone()
        for _ in range(self.steps):
            _, grad = self.gain_and_grad(metric, x_adv, ref)
            delta = x_adv - x
            # ∇RMSE ∝ δ: remove the component of the metric gradient along δ.
            dd = delta.pow(2).sum(dim=(1, 2, 3))
            coef = (grad * delta).sum(dim=(1, 2, 3)) / torch.where(dd > 0, dd, torch.ones_like(dd))
            # Scale by the RMS of the *full* gradient: a step of size lr along ∇ whose radial part
            # is dropped. (Normalising the projected gradient instead would blow float noise up
            # to a full step when ∇ is nearly parallel to δ, i.e. at an optimum on the level set.)
            rms = grad.pow(2).mean(dim=(1, 2, 3)).sqrt()
            step = (grad - _per_image(coef) * delta) / _per_image(torch.where(rms > 0, rms, torch.ones_like(rms)))
            delta = delta + self.lr * step
            r = delta.pow(2).mean(dim=(1, 2, 3)).sqrt()
            factor = torch.where(r > self.bound, self.bound / r.clamp_min(1e-30), torch.ones_like(r))
            x_adv = (x + delta * _per_image(factor)).clamp_(0.0, 1.0)
        return x_adv
