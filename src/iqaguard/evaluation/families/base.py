"""What every family shares: scoring through ``protect(metric)`` and the adaptive target."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ...adaptive import adaptive as make_adaptive


@dataclass
class Defended:
    """Defended scores of a batch, plus per-image extra row columns and the cost."""
    scores: torch.Tensor
    seconds: float                      # per image
    forwards: float = 1.0               # metric forward passes per defended score
    images: torch.Tensor | None = None  # what the metric saw (purification only)
    extra: dict[str, list[Any]] = field(default_factory=dict)


class Family:
    """A defense family. Subclasses override what differs; the defaults fit a defense whose
    ``protect(metric)`` is an ordinary deterministic metric."""

    name = ""
    has_images = False      # True: the defense changes the image (quality columns, strips)

    def protect(self, defense, metric, ctx) -> Any:
        """The metric an attacker faces once the defense is deployed (fitted first if needed)."""
        return defense.protect(metric)

    def score(self, protected, x, ref, seeds: Sequence[int] | None, ctx) -> Defended:
        if hasattr(protected, "seeds"):
            protected.seeds = seeds
        t0 = time.perf_counter()
        with torch.no_grad():
            s = protected(x) if ref is None else protected(x, ref)
        return Defended(s, (time.perf_counter() - t0) / max(x.shape[0], 1))

    def score_clean(self, protected, x, ref, seeds, ctx) -> Defended:
        """The defended-clean score (certified families add their certificate here)."""
        return self.score(protected, x, ref, seeds, ctx)

    def adaptive_target(self, defense, metric, protected, plan) -> Any:
        """What a white-box adaptive attack differentiates (``wrapper`` and ``grad_cost`` set)."""
        return make_adaptive(defense, metric, plan.wrapper, plan.eot_k)

    def query_target(self, defense, metric, protected) -> Any:
        """What a black-box adaptive attack queries: the deployed defense, fresh draws per query."""
        if hasattr(protected, "seeds"):
            protected.seeds = None
        return protected

    def wrapper(self, defense, plan) -> str:
        """The recorded name of the adaptive wrapper (without building anything)."""
        from ...adaptive import resolved_wrapper

        return resolved_wrapper(defense, plan.wrapper, plan.eot_k)

    def cost_columns(self, defense, ctx) -> dict[str, Any]:
        return {}
