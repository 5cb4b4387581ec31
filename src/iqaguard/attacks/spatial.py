"""stAdv: a spatially transformed adversarial example (Xiao et al., ICLR 2018).

Instead of adding noise, every output pixel samples the input at its own displaced position: a
per-pixel flow field (in pixels) is optimised with L-BFGS and the image is warped bilinearly.
Source (formulas only; no code copied): Xiao, Zhu, Li, He, Liu & Song, "Spatially Transformed
Adversarial Examples", ICLR 2018, eq. 2 (bilinear warp) and eq. 4 (L_flow); optimiser schedule
and weights from the study's ``stadv/run.py`` (``torch.optim.LBFGS(lr=2.5, max_iter=1,
max_eval=25)`` stepped 3 times, 50·L_adv + 1e-5·L_flow).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

from ..registry import ATTACKS
from . import _checks as check
from .base import Attack


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` (N,C,H,W) at pixel positions ``(row + flow[:,0], col + flow[:,1])``,
    bilinear, with border padding (out-of-image positions take the nearest edge value)."""
    n, _, h, w = x.shape
    rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
    cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
    r = rows + flow[:, 0]
    c = cols + flow[:, 1]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels
    gx = 2 * c / max(w - 1, 1) - 1
    gy = 2 * r / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out.clamp(0.0, 1.0)  # interpolation round-off can leave [0,1] by ~1e-7


def flow_loss(flow: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Xiao et al. eq. 4 per image: Σ_p Σ_{q∈N(p)} sqrt(‖Δu‖² + ‖Δv‖² + eps) over the
    4-neighbours q of every pixel p (neighbours outside the image are skipped)."""
    total = flow.new_zeros(flow.shape[0])
    for dim in (2, 3):
        d = torch.diff(flow, dim=dim).pow(2).sum(dim=1)  # (N, ·, ·): squared flow difference
        # each neighbouring pair appears twice in the double sum (p→q and q→p)
        total = total + 2 * torch.sqrt(d + eps).flatten(1).sum(dim=1)
    return total


@ATTACKS.register("stadv")
class StAdv(Attack):
    """Optimise a flow field f (N,2,H,W), zero at the start, minimising
    ``adv_weight·(−gain(warp(x, f))) + smooth_weight·L_flow(f)`` with ``torch.optim.LBFGS``
    (``lr``; ``steps`` calls of ``step``, each of at most ``max_iter`` iterations and
    ``max_eval`` evaluations). The objective is summed over the batch (images do not interact
    except through L-BFGS's shared step).

    What is the study's and what is not. The *schedule* is the study's: ``LBFGS(lr=2.5,
    max_iter=1, max_eval=25)`` stepped 3 times, i.e. 3 gradient evaluations; the first L-BFGS
    step is ``lr·∇/‖∇‖₁`` (torch's first-iteration rule), the next two use the curvature pairs.
    The weights 50 and 1e-5 are the study's. The *loss* is the paper's (Xiao et al. 2018): its
    L_flow (eq. 4, sqrt of the squared flow differences of the 4-neighbours) and, as L_adv, the
    package's normalised gain (the attack objective of every attack here, since the paper's
    L_adv is a classification margin). The study instead uses the rank loss
    ``s_o/(s + s_o)`` with ``s_o = 1.5·range`` (a monotone function of the same score, defined
    only for positive scores) and a squared, diagonal-neighbour flow loss without the sqrt.
    Why: the rank loss is undefined for metrics whose scores can be ≤ 0 or lower-better
    without a known maximum, and L-BFGS's step directions after the first are invariant to
    the loss scale, so the monotone change matters little.

    Threat ``spatial``: no norm ball; the strength knob is ``lr`` (``budget``). After a call,
    ``last_flow_loss`` (L_flow) and ``last_max_flow`` (largest per-pixel displacement, in
    pixels) hold the per-image size of the perturbation actually used (zero for images the
    base class returned unchanged).
    """

    threat = "spatial"
    budget_param = "lr"

    def __init__(self, lr: float = 2.5, steps: int = 3, max_iter: int = 1, max_eval: int = 25,
                 adv_weight: float = 50.0, smooth_weight: float = 1e-5,
                 direction: str = "better", target: float | None = None):
        super().__init__(direction=direction, target=target)
        check.lr(lr)
        check.nonneg(adv_weight, "adv_weight")
        check.nonneg(smooth_weight, "smooth_weight")
        check.steps(steps)
        check.steps(max_iter, "max_iter")
        check.steps(max_eval, "max_eval")
        self.lr = float(lr)
        self.steps = int(steps)
        self.max_iter = int(max_iter)
        self.max_eval = int(max_eval)
        self.adv_weight = float(adv_weight)
        self.smooth_weight = float(smooth_weight)

    @property
    def budget(self) -> float:
        return self.lr

    def perturb(self, metric, x, ref):
        n, _, h, w = x.shape
        flow = torch.zeros(n, 2, h, w, device=x.device, dtype=x.dtype, requires_grad=True)
        opt = torch.optim.LBFGS([flow], lr=self.lr, max_iter=self.max_iter, max_eval=self.max_eval)

        def closure():
            opt.zero_grad()
            xw = warp(x, flow)
            score = metric(xw, ref) if ref is not None else metric(xw)
            loss = (self.adv_weight * -self.gain(metric, score)
                    + self.smooth_weight * flow_loss(flow)).sum()
            # autograd.grad, not backward: the metric's own parameters must not collect gradients
            (grad,) = torch.autograd.grad(loss, flow)
            self.stats.grad_calls += 1
            flow.grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            return loss.detach()

        for _ in range(self.steps):
            opt.step(closure)
        flow = flow.detach()
        if not torch.isfinite(flow).all():
            flow = torch.nan_to_num(flow, nan=0.0, posinf=0.0, neginf=0.0)
        self.last_flow = flow
        self.last_flow_loss = flow_loss(flow)
        self.last_max_flow = flow.pow(2).sum(dim=1).sqrt().flatten(1).amax(dim=1)
        with torch.no_grad():
            return warp(x, flow)

    def keep_best(self, metric, x, x_adv, ref):
        out = super().keep_best(metric, x, x_adv, ref)
        keep = self.improved.view(-1, 1, 1, 1).to(x.dtype)
        self.last_flow = self.last_flow * keep            # the flow of what is returned
        self.last_flow_loss = flow_loss(self.last_flow)
        self.last_max_flow = self.last_flow.pow(2).sum(dim=1).sqrt().flatten(1).amax(dim=1)
        return out
