"""Subjective score correction (Chistyakova et al. 2024): the target of an adversarial example is
lowered in proportion to its full-reference dissimilarity from the clean image.

Source: github wianluna/metrics_at, ``metric_at/trainer.py`` (``label_strategy``):
``label_adv = clamp(label − penalty·d(x_adv, x)·(MAX − MIN), MIN, MAX)`` with penalty 1,
``d = 1 − SSIM`` (pytorch_msssim ``ssim``: RGB, 11×11 Gaussian window σ 1.5, data range 1) or
``d = LPIPS`` (pyiqa ``lpips``, ``net='vgg'``), MIN/MAX the KonIQ-10k MOS range. Here MIN/MAX is
the metric's ``score_range``, the correction is computed in range units, and "lower" means
"worse": a lower-better metric's target is raised. The dissimilarity is computed with iqaguard's
own metrics, without gradient (the reference computes it after the attack, as a constant label).
"""
from __future__ import annotations

import torch

from ...errors import InputError
from ...registry import METRICS

# label strategy -> (metric spec, dissimilarity from the metric's value)
STRATEGIES = {
    "none": None,
    "ssim": ("ssim", dict(channel="rgb"), lambda v: 1.0 - v),
    "ms_ssim": ("ms_ssim", dict(channel="rgb"), lambda v: 1.0 - v),
    "lpips": ("lpips", dict(net="vgg"), lambda v: v),
}


class ScoreCorrection:
    """``d(x_adv, x)`` per image for a label strategy, and the corrected targets."""

    def __init__(self, strategy: str, penalty: float = 1.0, weights: str = "", who: str = "defense"):
        self.check_name(strategy)
        self.strategy, self.penalty = strategy, float(penalty)
        self.metric = None
        if STRATEGIES[strategy] is not None:
            name, params, self._d = STRATEGIES[strategy]
            if name == "lpips":
                params = dict(params, backbone_weights=weights)
            try:
                self.metric = METRICS.create(name, **params)
            except InputError as exc:
                raise InputError(f"{who}: its label correction needs {name}({', '.join(f'{k}={v!r}' for k, v in params.items() if v)}), "
                                 f"which cannot be built here: {exc}. Pass the file as label_weights=PATH or put it in "
                                 f"$IQAGUARD_WEIGHTS; the offline variant at-apgd-ssim-4 corrects labels by SSIM") from None

    @staticmethod
    def check_name(strategy: str) -> None:
        if strategy not in STRATEGIES:
            raise InputError(f"label must be one of {', '.join(STRATEGIES)}, got {strategy!r}")

    def check_size(self, images: torch.Tensor) -> None:
        """Fail before training if the FR metric cannot score images of this size."""
        if self.metric is not None:
            with torch.no_grad():
                self.metric(images[:1], images[:1])

    def dissimilarity(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if self.metric is None:
            return torch.zeros(x.shape[0], device=x.device)
        with torch.no_grad():
            return self._d(self.metric(x_adv.detach(), x.detach())).to(x.dtype)

    def correct(self, u: torch.Tensor, x_adv: torch.Tensor, x: torch.Tensor, sign: float) -> torch.Tensor:
        """Targets (range units) of ``x_adv``: ``u − sign·penalty·d`` — one range width per unit
        of dissimilarity, toward worse (``sign`` = +1 higher-better, −1 lower-better)."""
        return u - sign * self.penalty * self.dissimilarity(x_adv, x)
