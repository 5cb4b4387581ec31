"""APGD in ℓ∞ (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks", ICML 2020, Algorithm 1), as a training-time attack.

Step size η starts at 2ε; each step moves with momentum α = 0.75 between the projected signed
step z and the previous iterate: x⁺ = P(x + α(z − x) + (1 − α)(x − x_prev)). At checkpoints
w_j = ⌈p_j·N⌉ (p₀ = 0, p₁ = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) η is halved and
the iterate restarts from the best point when (1) fewer than ρ = 0.75 of the steps since the last
checkpoint increased the objective, or (2) η was not reduced at the last checkpoint and the best
value has not improved since. Everything is per image. Returns the best point found.
"""
from __future__ import annotations

import math
from typing import Callable

import torch


def checkpoints(n_iter: int) -> list[int]:
    """Iterations w_j at which the step size is reconsidered (Croce & Hein 2020, §3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    w = (math.ceil(round(q * n_iter, 9)) for q in p[1:])   # round: 0.41 + 0.16 is not 0.57 in floats
    return sorted({v for v in w if 0 < v < n_iter})


def apgd_linf(gain_and_grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
              x: torch.Tensor, eps: float, n_iter: int, rho: float = 0.75, alpha: float = 0.75) -> torch.Tensor:
    """Maximise ``gain_and_grad(x) -> (per-image gain, d gain/dx)`` in the ℓ∞ ball of radius eps
    around ``x`` (and [0,1]), starting at ``x``; ``n_iter`` + 1 gradient calls in all."""
    lo, hi = (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)

    def proj(z):
        return torch.max(torch.min(z, hi), lo)

    def pick(mask, a, b):
        return torch.where(mask.view(-1, *([1] * (a.dim() - 1))), a, b)

    eta = torch.full((x.shape[0], 1, 1, 1), 2.0 * eps, dtype=x.dtype, device=x.device)
    f0, g0 = gain_and_grad(x)
    x_prev, x_cur = x, proj(x + eta * g0.sign())
    f_cur, g_cur = gain_and_grad(x_cur)
    up = f_cur > f0
    f_max, x_max, g_max = torch.where(up, f_cur, f0), pick(up, x_cur, x), pick(up, g_cur, g0)
    count = up.to(x.dtype)
    marks = set(checkpoints(n_iter))
    last_mark, f_max_last = 0, f_max.clone()
    reduced_last = torch.zeros_like(up)
    for k in range(1, n_iter):
        z = proj(x_cur + eta * g_cur.sign())
        x_new = proj(x_cur + alpha * (z - x_cur) + (1.0 - alpha) * (x_cur - x_prev))
        f_new, g_new = gain_and_grad(x_new)
        count += (f_new > f_cur).to(x.dtype)
        best = f_new > f_max
        f_max, x_max, g_max = torch.where(best, f_new, f_max), pick(best, x_new, x_max), pick(best, g_new, g_max)
        x_prev, x_cur, f_cur, g_cur = x_cur, x_new, f_new, g_new
        if k in marks:
            cond1 = count < rho * (k - last_mark)
            cond2 = ~reduced_last & (f_max <= f_max_last)
            reduce = cond1 | cond2
            eta = pick(reduce, eta / 2.0, eta)
            x_cur, g_cur = pick(reduce, x_max, x_cur), pick(reduce, g_max, g_cur)
            f_cur = torch.where(reduce, f_max, f_cur)
            reduced_last, f_max_last, last_mark = reduce, f_max.clone(), k
            count = torch.zeros_like(count)
    return x_max
