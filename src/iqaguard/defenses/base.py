"""The Defense contract: ``defense.protect(metric) -> Metric`` for all three families.

Purifiers transform the image before the metric sees it (``purify``); ``protect`` returns
``metric ∘ purify``. They declare whether they are differentiable, randomized and whether they
change the image size, and give ``estimate_forward`` — a differentiable surrogate of ``purify``
used by BPDA (identity by default).

Randomness: a randomized purifier draws from per-image seeds when given (``seeds``, one int per
image), so the clean and attacked image of a pair get the same draw and results do not depend on
batching; without seeds it draws from torch's global generator (fresh draws, as EOT needs).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..images import check_image
from ..metrics.base import Metric


class Defense:
    family: str = "purification"   # "purification" | "training" | "certified"
    name: str = ""
    params: dict[str, Any] = {}
    identity: bool = False         # True only for the no-defense baseline
    # method card facts recorded in the store's methods table (shown by reports and the leaderboard)
    paper: str = ""
    weights_licence: str = ""

    def protect(self, metric: Metric) -> Metric:  # pragma: no cover
        raise NotImplementedError

    def unsupported(self, metric: Metric) -> str | None:
        """Why this defense cannot protect ``metric`` (None: it can). A suite skips such metrics
        instead of failing them (adversarial training needs a metric with weights)."""
        return None


class Purifier(Defense):
    """Base class of purification defenses. Subclasses implement ``transform(x, gens)``."""

    family = "purification"
    differentiable: bool = True
    randomized: bool = False
    changes_size: bool = False
    geometric: bool = False   # only re-indexes pixels (flip, crop, rotate): quality is judged after alignment

    def purify(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        check_image(x, "x")
        return self.transform(x, self._generators(x, seeds))

    def estimate_forward(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """Differentiable surrogate of ``purify`` for BPDA (identity unless overridden)."""
        if self.differentiable:
            return self.transform(x, self._generators(x, seeds))
        return x

    def transform(self, x: torch.Tensor, gens: list[torch.Generator] | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def protect(self, metric: Metric) -> "PurifiedMetric":
        return PurifiedMetric(metric, self)

    def _generators(self, x: torch.Tensor, seeds: Sequence[int] | None) -> list[torch.Generator] | None:
        if not self.randomized or seeds is None:
            return None
        seeds = list(seeds)
        if len(seeds) != x.shape[0]:
            raise InputError(f"seeds must have one entry per image: {len(seeds)} for a batch of {x.shape[0]}")
        gens = []
        for s in seeds:
            g = torch.Generator(device=x.device)
            g.manual_seed(int(s) % (2**63))
            gens.append(g)
        return gens

    @staticmethod
    def draw(gens: list[torch.Generator] | None, i: int, shape, device) -> torch.Tensor:
        """Uniform [0,1) draw for image ``i`` from its generator (or the global one)."""
        g = None if gens is None else gens[i]
        return torch.rand(shape, generator=g, device=device)

    @staticmethod
    def draw_normal(gens: list[torch.Generator] | None, i: int, shape, device) -> torch.Tensor:
        g = None if gens is None else gens[i]
        return torch.randn(shape, generator=g, device=device)

    def purify_pair(self, x: torch.Tensor, ref: torch.Tensor | None,
                    seeds: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Purify ``x`` and bring an FR reference into register with the result. Purifiers whose
        geometry depends on a draw (``random-crop``) override it to apply one draw to both."""
        y = self.purify(x, seeds)
        return y, (None if ref is None else self.align_ref(ref, y))

    def align(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        """The clean image as the defense's geometry leaves it, for judging lost *detail* rather
        than misalignment: a geometric purifier applies itself (same draw), the others nothing."""
        return self.purify(x, seeds) if self.geometric else x

    def align_ref(self, ref: torch.Tensor, purified: torch.Tensor) -> torch.Tensor:
        """For FR metrics: bring the (trusted) reference to the purified image's size."""
        if ref.shape[-2:] == purified.shape[-2:]:
            return ref
        return F.interpolate(ref, size=purified.shape[-2:], mode="bilinear", align_corners=False, antialias=True)


class PurifiedMetric(Metric):
    """``metric ∘ purify``: what an attacker faces when the defense is deployed.

    ``seeds`` (one per image, or None) fixes the randomized draws; the runner sets it so the clean
    and the attacked image of a pair are purified with the same draw.
    """

    def __init__(self, metric: Metric, defense: Purifier):
        super().__init__()
        self.metric = metric
        self.defense = defense
        self.like(metric)
        self.differentiable = metric.differentiable and defense.differentiable
        self.seeds: Sequence[int] | None = None

    def score(self, x, ref):
        y, ref = self.defense.purify_pair(x, ref, self.seeds)
        return self.metric(y, ref) if ref is not None else self.metric(y)
