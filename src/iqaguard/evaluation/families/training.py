"""Adversarial training: ``protect(metric)`` is a fine-tuned copy of the metric.

The defense is fitted once per metric on the run's training split (dataset images disjoint from
the evaluated ones) through the shared fit-and-cache (``iqaguard.fitting``, under
``<out>/trainable/``), so a rerun — or a run after ``iqaguard train-defense`` — trains nothing. The adaptive column attacks the fine-tuned metric directly (white-box); the transfer
column uses the adversarial images made on the original metric. The image is untouched, so there
are no image-quality columns."""
from __future__ import annotations

from .base import Family


class Training(Family):
    name = "training"

    def protect(self, defense, metric, ctx):
        ctx.fit_defense(defense, metric)
        return defense.protect(metric)

    def adaptive_target(self, defense, metric, protected, plan):
        protected.wrapper, protected.grad_cost = "none", 1
        return protected

    def wrapper(self, defense, plan) -> str:
        return "none"

    def cost_columns(self, defense, ctx):
        return {"fit_seconds": getattr(defense, "fit_seconds", None)}
