"""``nt``: norm-regularisation training (Liu, Yang, Li, Ding & Jiang, "Defense Against Adversarial
Attacks on No-Reference Image Quality Models with Gradient Norm Regularization", CVPR 2024;
code: github YangiD/DefenseIQA-NT, ``HyperIQASolver.loss_grad``).

A first-order bound: |f(x + δ) − f(x)| ≤ ε·‖∇ₓf(x)‖₁ for ‖δ‖∞ ≤ ε, so NT penalises the ℓ1 norm of
the input gradient. As the reference code, without double backpropagation: with v = sign(∇ₓf(x))
(a constant), the directional finite difference (f(x + h·v) − f(x))/h ≈ ∇ₓf·v = ‖∇ₓf‖₁, and
loss = L1(f(x), y) + λ·½·mean((f(x + h·v) − f(x))/h)²  (gradient flows through both scores).

Reference setting: HyperIQA on LIVEC, L1 loss, weight λ = 1e-3 on raw 0–100 scores, h = 0.01
in ImageNet-normalised input units. Here scores are in range units and images in [0,1], which
rescales both: see the method card (docs/methods/defenses.md) for the values chosen and why.
"""
from __future__ import annotations

import torch

from ...registry import DEFENSES
from ..purification._checks import real
from .base import TrainedDefense


@DEFENSES.register("nt")
class NormTraining(TrainedDefense):
    """Fine-tune with ``L1(f(x), y) + weight·½·mean(((f(x + h·sign∇f) − f(x))/h)²)`` (range units)."""

    def __init__(self, weight: float = 0.05, h: float = 0.01, epochs: int = 4, lr: float = 0.0125,
                 batch: int = 8, loss: str = "l1", seed: int = 0):
        super().__init__(epochs=epochs, lr=lr, batch=batch, loss=loss, seed=seed)
        self.weight = real(weight, "weight", lo=0.0)
        self.h = real(h, "h", lo=0.0, hi=1.0, lo_open=True)

    def _loss(self, model, x, ref, u):
        xg = x.detach().clone().requires_grad_(True)
        pred = self.score(model, xg, ref)
        (dx,) = torch.autograd.grad(pred.sum(), xg, retain_graph=True)
        self._calls += 1
        v = torch.nan_to_num(dx).sign()
        # [0,1] images: the step is clipped at the border, and the difference divided by h as
        # in the reference (which does not clip its normalised input)
        pred_h = self.score(model, (x + self.h * v).clamp(0.0, 1.0), ref)
        dl = (pred_h - pred) / self.h
        return self.regression(pred, u) + self.weight * 0.5 * dl.pow(2).mean()
