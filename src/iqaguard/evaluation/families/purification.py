"""Purification: the metric sees ``purify(x)``. Adds image-quality columns and defended images.

Adaptive attacks: direct white-box through differentiable deterministic purifiers, BPDA through
non-differentiable ones, EOT through randomized ones (``iqaguard.adaptive``)."""
from __future__ import annotations

import time

import torch

from .base import Defended, Family


class Purification(Family):
    name = "purification"
    has_images = True

    def score(self, protected, x, ref, seeds, ctx) -> Defended:
        t0 = time.perf_counter()
        with torch.no_grad():
            y, r = protected.defense.purify_pair(x, ref, seeds)
            s = protected.metric(y) if r is None else protected.metric(y, r)
        return Defended(s, (time.perf_counter() - t0) / max(x.shape[0], 1), images=y)
