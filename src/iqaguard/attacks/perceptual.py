"""White-box attacks with a perceptual constraint: Korhonen et al., Zhang et al., SSAH and MADC.

Each keeps the change hard to see in its own way: Korhonen & You put it where texture hides it,
Zhang et al. add a full-reference (FR) penalty to the loss, SSAH pins the low-frequency band and
MADC moves on a fixed-RMSE level set. The defaults are the study's (Gushchin et al. 2024, arXiv 2408.01541; code msu-video-group/adversarial-defenses-for-iqa) and
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
    """The study's spatial-activity map for Korhonen & You (``korhonen-et-al/run.py``), (N,1,H,W).

    Signed Sobel derivative along the columns (``scipy.ndimage.sobel`` default axis: kernel
    [−1,0,1] across, [1,2,1] down) of the BT.601 luma Y (the study's limited-range Y; an affine
    change of Y does not survive the normalisation), a one-pixel border set to 0, divided by its
    per-image maximum (the map stays *signed*: on left-to-right darkening edges it is negative,
    and the study's gradient there is reversed), then grey-dilated with the study's 5×5 disc
    (a 5×5 square without its corners). An image whose maximum is ≤ 0 gets a map of ones, as in
    the study. Flat regions get exactly 0 and never move.
    """
    y = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device, dtype=x.dtype)
    sob = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3))
    inner = torch.zeros_like(sob)
    inner[..., 1:-1, 1:-1] = sob[..., 1:-1, 1:-1]
    peak = inner.amax(dim=(1, 2, 3), keepdim=True)
    m = torch.where(peak > 0, inner / torch.where(peak > 0, peak, torch.ones_like(peak)), torch.ones_like(inner))
    # the 5×5 disc is the union of a 3×5 and a 5×3 rectangle: max over both (−inf padding)
    return torch.maximum(F.max_pool2d(m, (3, 5), stride=1, padding=(1, 2)),
                         F.max_pool2d(m, (5, 3), stride=1, padding=(2, 1)))


def haar_low_band(x: torch.Tensor) -> torch.Tensor:
    """The study's SSAH low band at full size: one-level Haar DWT, LL only, inverse DWT — every
    2×2 block replaced by its mean. Odd sizes are zero-padded to even (as the study pads), and
    the padding is cropped off again."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (0, w % 2, 0, h % 2))
    low = F.avg_pool2d(xp, kernel_size=2, stride=2)
    return low.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)[..., :h, :w]


class _AdamAttack(Attack):
    """Shared loop: Adam on the image pixels minimising ``penalty(x', x) − gain``, with an
    optional fixed per-pixel gradient mask, clamped to [0,1] after every step."""

    threat = "perceptual"
    budget_param = "lr"

    def __init__(self, lr: float, steps: int, direction: str, target: float | None):
        super().__init__(direction=direction, target=target)
        self.lr = check.lr(lr)
        self.steps = check.steps(steps)

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
    """Korhonen & You 2022 as the study runs it: Adam on the image for ``steps`` iterations with
    the gradient multiplied by :func:`activity_mask` of the clean image (the study's signed
    one-axis Sobel map), so the change lands on vertical edges and texture; where the map is 0
    the pixel never moves (Adam's update of an all-zero gradient is exactly 0). ``lr`` default
    0.005 and 10 steps are the study's."""

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
    """SSAH (Luo et al. 2022) as the study adapts it (``ssah/run.py``): Adam minimising
    ``−gain + weight·Σ SmoothL1(low(x'), low(x))`` with ``low`` the full-size Haar low band
    (:func:`haar_low_band`) and the SmoothL1 (β = 1) *summed* over every pixel and channel, as
    the study's ``SmoothL1Loss(reduction='sum')`` does, so the penalty grows with the image
    size and the attack is pushed into high frequencies. ``weight`` 0.1, ``lr`` 0.001 and 10
    steps are the study's."""

    def __init__(self, lr: float = 0.001, steps: int = 10, weight: float = 0.1,
                 direction: str = "better", target: float | None = None):
        super().__init__(lr, steps, direction, target)
        self.weight = check.nonneg(weight, "weight")

    def penalty_grad(self, x_adv, x):
        if self.weight == 0:
            return None
        xa = x_adv.detach().requires_grad_(True)
        low = F.smooth_l1_loss(haar_low_band(xa), haar_low_band(x), reduction="sum", beta=1.0)
        (g,) = torch.autograd.grad(self.weight * low, xa)
        return g


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image root-mean-square difference."""
    return (a - b).pow(2).mean(dim=(1, 2, 3)).sqrt()


@ATTACKS.register("madc")
class MADC(Attack):
    """MAD competition (Wang & Simoncelli 2008) as the study runs it (``madc/run.py``): ``steps``
    iterations, each one

    1. a sign step ``x' ← x' + lr·sign(∇ − proj)``: the gain gradient with its component along
       ∇RMSE(x', x) ∝ δ removed (per image; none on the first step, where δ = 0), so to first
       order the step slides along the RMSE level set;
    2. a correction back inside the level set: while RMSE(x', x) > ``bound`` (10/255), every
       pixel moves ``0.0005·sign(δ)`` toward x (the study's signed descent on the RMSE), then
       clamped to [0,1].

    Every step moves every pixel by ``lr``, so ‖x' − x‖∞ ≤ steps·lr (the study's calibrated lr
    9.8e-4 / 1.96e-3 / 3.92e-3 × 8 steps are exactly 2, 4, 8 /255). Threat ``"l2"``; ``budget``
    is the RMSE bound (ℓ2 norm = bound·sqrt(C·H·W)); the strength is ``lr`` (``budget_param``).
    """

    threat = "l2"
    budget_param = "lr"           # the sign-step size (the study's calibrated parameter), not the RMSE bound
    CORRECTION = 0.0005           # the study's step back toward x while RMSE > bound

    def __init__(self, lr: float = 0.001, steps: int = 8, bound: float = RMSE_BOUND,
                 direction: str = "better", target: float | None = None):
        super().__init__(direction=direction, target=target)
        self.lr = check.lr(lr)
        self.steps = check.steps(steps)
        self.bound = check.linf(bound, "bound")

    @property
    def budget(self) -> float:
        return self.bound

    def perturb(self, metric, x, ref):
        x_adv = x.clone()
        for _ in range(self.steps):
            _, grad = self.gain_and_grad(metric, x_adv, ref)
            delta = x_adv - x
            # ∇RMSE ∝ δ: remove the component of the gain gradient along δ (zero when δ = 0).
            dd = delta.pow(2).sum(dim=(1, 2, 3))
            coef = (grad * delta).sum(dim=(1, 2, 3)) / torch.where(dd > 0, dd, torch.ones_like(dd))
            x_adv = x_adv + self.lr * (grad - _per_image(coef) * delta).sign()
            # back inside the level set: signed steps toward x while RMSE > bound (per image)
            for _ in range(int(2 / self.CORRECTION)):
                over = rmse(x_adv, x) > self.bound
                if not bool(over.any()):
                    break
                x_adv = torch.where(_per_image(over), x_adv - self.CORRECTION * (x_adv - x).sign(), x_adv)
                x_adv = x_adv.clamp_(0.0, 1.0)
            x_adv = x_adv.clamp_(0.0, 1.0)
        return x_adv
