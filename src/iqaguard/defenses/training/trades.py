"""``at-trades`` (new in iqaguard): TRADES-style training for a regression metric.

TRADES (Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan, "Theoretically Principled Trade-off between
Robustness and Accuracy", ICML 2019) splits the robust loss into a natural term and a boundary
term: L(f(x), y) + β·max_{x'∈B(x,ε)} KL(f(x) ‖ f(x')). For a quality score the KL term becomes the
squared score change in range units:

    loss = L(f(x), y) + β·mean((f(x_adv) − f(x))²),

with x_adv found by PGD maximising (f(x') − f(x))² (f(x) held fixed) from x + 0.001·N(0, 1), as in
TRADES's inner loop (signed steps, ℓ∞ projection). Unlike the score-correction variants it has
no target for x_adv: it asks the metric to be *stable* inside the ball, in either direction.
"""
from __future__ import annotations

import torch

from ...registry import DEFENSES
from ..purification._checks import int_in, real
from .base import TrainedDefense


@DEFENSES.register("at-trades")
class TRADES(TrainedDefense):
    """Fine-tune with ``MSE(f(x), y) + beta·mean((f(x_adv) − f(x))²)``, x_adv from PGD on the second term."""

    def __init__(self, eps: float = 4 / 255, steps: int = 5, beta: float = 1.0, epochs: int = 4,
                 lr: float = 0.0125, batch: int = 8, loss: str = "mse", seed: int = 0):
        super().__init__(epochs=epochs, lr=lr, batch=batch, loss=loss, seed=seed)
        self.eps = real(eps, "eps", lo=0.0, hi=1.0, lo_open=True)
        self.steps = int_in(steps, "steps", 1, 1000)
        self.beta = real(beta, "beta", lo=0.0)

    def _inner(self, model, x, ref, clean):
        lo, hi = (x - self.eps).clamp(min=0.0), (x + self.eps).clamp(max=1.0)
        step = 2.5 * self.eps / self.steps        # the registry PGD's default step
        z = torch.max(torch.min(x + 0.001 * torch.randn_like(x), hi), lo)
        for _ in range(self.steps):
            z = z.detach().requires_grad_(True)
            gap = (self.score(model, z, ref) - clean).pow(2).sum()
            (g,) = torch.autograd.grad(gap, z)
            self._calls += 1
            z = torch.max(torch.min(z.detach() + step * torch.nan_to_num(g).sign(), hi), lo)
        return z.detach()

    def _loss(self, model, x, ref, u):
        with torch.no_grad():
            clean = self.score(model, x, ref)
        x_adv = self._inner(model, x, ref, clean)
        both = self.score(model, torch.cat([x, x_adv]), None if ref is None else torch.cat([ref, ref]))
        pred, pred_adv = both[: x.shape[0]], both[x.shape[0]:]
        return self.regression(pred, u) + self.beta * (pred_adv - pred).pow(2).mean()
