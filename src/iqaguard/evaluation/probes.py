"""Honesty probes per (metric, defense), measured on the first two images of a run.

The gradient norm of the attack objective through ``protect(metric)`` and through the adaptive
target, and how much the defended score of a fixed input moves between two random draws. They
feed the flags (``flags.py``): a zero gradient means gradient masking, a spread means randomness.
"""
from __future__ import annotations

from typing import Any

import torch

from ..seeds import derive_seed
from .families import FAMILIES


def _gain(metric, s: torch.Tensor) -> torch.Tensor:
    """The default attack objective: score toward 'better', over the range (attacks/base.py)."""
    return (-s if metric.lower_better else s) / metric.range_width


def _grad_norm(target, metric, x, ref) -> tuple[float, float]:
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        s = target(xg) if ref is None else target(xg, ref)
        if not s.requires_grad:
            raise RuntimeError("no graph")
        (g,) = torch.autograd.grad(_gain(metric, s).sum(), xg, allow_unused=True)
    if g is None:
        raise RuntimeError("unused")
    return float(torch.nan_to_num(g, nan=0.0).flatten(1).norm(dim=1).mean()), float(torch.isfinite(g).all())


def probe(worker, metric, m_spec: str, d_spec: str, x, ref, ids) -> dict[str, Any]:
    plan = worker.plan
    defense = worker.defense(d_spec)
    fam = FAMILIES[plan.families[d_spec]]
    protected = worker.protected(m_spec, d_spec)
    out: dict[str, Any] = {"grad_norm": float("nan"), "grad_finite": float("nan"),
                           "adaptive_grad_norm": float("nan"), "wrapper": None, "score_spread": float("nan")}
    note = []
    seeds = [derive_seed(plan.seed, m_spec, d_spec, img) for img in ids]
    if metric.differentiable:
        if hasattr(protected, "seeds"):
            protected.seeds = seeds
        try:
            out["grad_norm"], out["grad_finite"] = _grad_norm(protected, metric, x, ref)
        except RuntimeError:
            out["grad_norm"], out["grad_finite"] = 0.0, 1.0
            note.append("no gradient through the defense (not differentiable)")
        if d_spec in plan.adaptive:
            target = fam.adaptive_target(defense, metric, protected, plan)
            out["wrapper"] = getattr(target, "wrapper", None)
            torch.manual_seed(derive_seed(plan.seed, "probe", m_spec, d_spec))
            out["adaptive_grad_norm"], _ = _grad_norm(target, metric, x, ref)
    a = fam.score(protected, x, ref, [derive_seed(plan.seed, "probe-a", img) for img in ids], worker)
    b = fam.score(protected, x, ref, [derive_seed(plan.seed, "probe-b", img) for img in ids], worker)
    out["score_spread"] = float((a.scores - b.scores).abs().max()) / metric.range_width
    out["note"] = "; ".join(note) or None
    return out

