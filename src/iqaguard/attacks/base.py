"""The Attack contract: ``attack(metric, x, ref=None) -> x_adv`` (same shape, in [0,1]).

The objective reads the metric. By default it pushes the score toward *better* (up for
higher-better metrics, down for lower-better ones), normalised by the metric's score range —
the study's threat, loss ``1 − sign·score/range``. ``direction="worse"`` pushes the other way and
``target=value`` pulls the score to a value. Every attack declares its threat model and budget
and counts the gradient calls and queries it used (``attack.stats`` after a call).
Trainable attacks (``trainable = True``, attacks/trainable.py) are fitted on a training split
before they are called.

Never worse than the input: after ``perturb`` the base class scores, per image, the input,
the candidate and the candidate as :meth:`Attack.quantize` stores it (three forwards of the
batch, counted as queries), and returns the input for every image where either version of the
candidate does not beat it. So ``quantize(attack(metric, x), x)`` — what the runner saves — never
scores worse than ``x`` for the attack's objective when ``x`` is on the 8-bit grid (any PNG/JPEG
image; otherwise ``quantize`` rounds the returned ``x`` itself, by less than half a level).
Trainable (universal / generative) attacks are exempt: their perturbation is fixed by design
(``keeps_best = False``).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, asdict
from typing import Any

import torch

from ..errors import InputError
from ..images import check_image, quantize_8bit, quantize_within, trusted

THREATS = ("linf", "l2", "perceptual", "spatial", "color", "universal", "sparse")


@dataclass
class AttackStats:
    """Cost of the last call: per batch, divide by the batch size for per-image numbers."""
    grad_calls: int = 0
    queries: int = 0
    seconds: float = 0.0
    batch: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Attack:
    """Base class. Subclasses implement ``perturb(metric, x, ref) -> x_adv``."""

    threat: str = "linf"
    white_box: bool = True
    trainable: bool = False       # True: needs fit(metric, images) (or fit_or_load) before a call
    keeps_best: bool = True       # return the input for images the attack did not improve
    #: the constructor parameter that sets the attack's strength (the one tables/attack_budgets.json
    #: names): the engine compares budgets through it. Every registered attack declares its own.
    budget_param: str = ""
    name: str = ""
    params: dict[str, Any] = {}

    def __init__(self, direction: str = "better", target: float | None = None):
        if direction not in ("better", "worse"):
            raise InputError(f"direction must be 'better' or 'worse', got {direction!r}")
        self.direction = direction
        if target is not None and (isinstance(target, bool) or not isinstance(target, (int, float))
                                   or not math.isfinite(target)):
            raise InputError(f"target must be a finite score or None, got {target!r}")
        self.target = None if target is None else float(target)
        self.stats = AttackStats()

    # -- budget ---------------------------------------------------------------------------
    @property
    def budget(self) -> float:
        """The size of the allowed perturbation in the units of ``threat`` (ℓ∞: eps)."""
        return float(getattr(self, "eps", float("nan")))

    # -- objective ------------------------------------------------------------------------
    def gain(self, metric, score: torch.Tensor) -> torch.Tensor:
        """Per-image value the attack maximises (normalised by the metric's range)."""
        width = metric.range_width
        if self.target is not None:
            return -(score - self.target).abs() / width
        sign = -1.0 if metric.lower_better else 1.0
        if self.direction == "worse":
            sign = -sign
        return sign * score / width

    def gain_and_grad(self, metric, x: torch.Tensor, ref: torch.Tensor | None):
        """One forward+backward: per-image gain and d(gain)/dx. Counts a gradient call."""
        x = x.detach().requires_grad_(True)
        g = self.gain(metric, metric(x, ref) if ref is not None else metric(x))
        (grad,) = torch.autograd.grad(g.sum(), x)
        self.stats.grad_calls += 1
        # unconditionally (identity on a finite gradient): testing first would sync a GPU every step
        return g.detach(), torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)

    def query(self, metric, x: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        """Black-box access: score under no_grad, counted as one query per image."""
        with torch.no_grad():
            g = self.gain(metric, metric(x, ref) if ref is not None else metric(x))
        self.stats.queries += x.shape[0]
        return g

    # -- call -----------------------------------------------------------------------------
    def __call__(self, metric, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        check_image(x, "x")
        if getattr(metric, "mode", "NR") == "FR" and ref is None:
            raise InputError(f"attack on full-reference metric {getattr(metric, 'name', '')!r} needs ref")
        if ref is not None:
            check_image(ref, "ref")
        if self.white_box and not getattr(metric, "differentiable", True):
            raise InputError(
                f"white-box attack {self.name or type(self).__name__!r} needs a differentiable metric; "
                f"{getattr(metric, 'name', '')!r} is not (wrap a defense with iqaguard.adaptive for BPDA)")
        self.stats = AttackStats(batch=x.shape[0])
        start = time.perf_counter()
        was_training = getattr(metric, "training", False)
        if hasattr(metric, "eval"):
            metric.eval()
        try:
            with trusted():   # validated above; the loop's own tensors are not re-checked (no GPU syncs)
                with torch.enable_grad():
                    x_adv = self.perturb(metric, x.detach(), None if ref is None else ref.detach())
                x_adv = x_adv.detach().clamp(0, 1)
                if self.keeps_best:
                    x_adv = self.keep_best(metric, x.detach(), x_adv, None if ref is None else ref.detach())
        finally:
            if was_training:
                metric.train()
        self.stats.seconds = time.perf_counter() - start
        return x_adv

    def keep_best(self, metric, x: torch.Tensor, x_adv: torch.Tensor,
                  ref: torch.Tensor | None) -> torch.Tensor:
        """Per image, ``x_adv`` if both it and its 8-bit version ``quantize(x_adv, x)`` score
        strictly better than ``x`` for the objective, else ``x``. Three forwards of the batch
        (counted in ``stats.queries``); ``self.improved`` holds the per-image choice."""
        xq = self.quantize(x_adv, x)
        # three batches of N, not one of 3·N: scores then match a scorer that sees the batch
        # as given (batch-dependent float round-off; metrics that carry per-image state).
        # A stochastic target that offers common_noise() scores all three under the same draws.
        with getattr(metric, "common_noise", nullcontext)():
            g0, ga, gq = [self.query(metric, t, ref) for t in (x, x_adv, xq)]
        better = (ga > g0) & (gq > g0)
        self.improved = better
        if bool(better.all()):
            return x_adv
        return torch.where(better.view(-1, 1, 1, 1), x_adv, x)

    def perturb(self, metric, x: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def quantize(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """8-bit version of ``x_adv`` (as saved to PNG) that still respects the budget."""
        if self.threat == "linf":
            return quantize_within(x_adv, x, self.budget)
        return quantize_8bit(x_adv)
