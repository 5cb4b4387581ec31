"""Honesty flags: signs that a cell's non-adaptive result overstates the defense.

Computed automatically from the per-cell summary and the run's probes (``runner._probe``), after
Carlini et al., "On Evaluating Adversarial Robustness" (2019) §5 and Athalye et al. 2018 §3.
Each flag is (metric, attack, defense, flag, detail); the definitions, with their thresholds,
are in ``FLAGS`` and docs/methods/scores.md. A flagged cell is ``unreliable`` until it has an
adaptive result (``adaptive-checked``); an unflagged cell is ``reliable``.
"""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd

from ..registry import ATTACKS

FLAG_COLUMNS = ["metric", "attack", "defense", "flag", "detail"]

ZERO_GRAD = 1e-12          # mean per-image ‖∇x gain‖₂ at or below this counts as zero
SPREAD_EPS = 1e-6          # defended-score change between two draws, in units of the range
BB_MARGIN = 0.005          # black-box gain must beat every white-box gain by this (× range)
BUDGET_MIN_GROWTH = 0.02   # undefended gain must grow at least this much (× range) over the budgets
BUDGET_FLAT = 0.1          # ... while the defended gain grows less than this fraction of it
COLLAPSE = 1.0             # a mean |score deviation| of a whole range width = collapse
GAP = 0.02                 # adaptive gain above the transfer gain (× range, same images) by more than this

FLAGS: dict[str, str] = {
    "zero-gradient": "the attack objective's gradient through metric∘defense is zero, NaN or absent on the "
                     "probe images: gradient attacks cannot work through it (gradient masking); use BPDA",
    "randomized-score": "the defended score of a fixed input changes between two random draws: the defense "
                        "is randomized, so gradient attacks need EOT",
    "blackbox-beats-whitebox": "a black-box attack gains more through the defense than every white-box "
                               "(transfer) attack: the white-box attacks are not finding the defense's weak points",
    "flat-in-budget": "across the budgets of one attack the undefended gain grows but the defended gain "
                      "stays flat: a bounded defense cannot hold at every budget, the attack is not adapting",
    "score-collapse": "the mean defended-score deviation reaches the whole score range: the metric "
                      "collapsed, larger budgets cannot show more",
    "transfer-underestimates": "the adaptive attack (against the defended metric itself) gains more than the "
                               "transfer attack on the same images: transfer results overstate this defense",
}
RELIABILITY = {
    "reliable": "the cell has an adaptive result and no flag tripped",
    "adaptive-checked": "a flag tripped and the adaptive (direct/BPDA/EOT/query) result is available: read that "
                        "column (the worst case and the ranking already include it)",
    "transfer-only": "no adaptive result (run without --no-adaptive to get one): never labelled reliable",
    "unreliable": "a flag tripped and the cell has no adaptive result",
}


def probe_key(plan, metric: str, defense: str) -> str:
    from .plan import CODE_VERSION

    parts = ["probe", metric, defense, plan.dataset, *plan.image_ids[:2], plan.seed, CODE_VERSION,
             plan.wrappers.get(defense, "")]
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]


def _attack_info(specs, methods: pd.DataFrame | None = None) -> dict[str, dict[str, Any]]:
    """white_box, budget and family (name + every parameter but the budget one) of each attack
    spec: from the store's methods table when it has the attack, else by building the attack."""
    out = {}
    known = {}
    if methods is not None and len(methods):
        known = {r["spec"]: r for r in methods[methods["kind"] == "attack"].to_dict("records")}
    for a in specs:
        if a in known and isinstance(known[a].get("info"), str):
            r = known[a]
            out[a] = {"white_box": bool(r["white_box"]), "budget": float(r["budget_value"])
                      if r["budget_value"] is not None else np.nan, "family": r["info"]}
            continue
        try:
            obj = ATTACKS.create(a)
        except Exception:   # a spec from an older store that no longer builds: no family flags
            out[a] = {"white_box": True, "budget": np.nan, "family": a}
            continue
        out[a] = attack_budget_info(obj)
    return out


def attack_budget_info(obj) -> dict[str, Any]:
    """white_box, the value of the attack's ``budget_param`` (its ``budget`` when it declares
    none) and its family: name + every other parameter, so budgets of one family compare."""
    param = getattr(obj, "budget_param", None) or "eps"
    params = dict(obj.params or {})
    value = params.get(param, getattr(obj, "budget", np.nan))
    try:
        value = float(value)
    except (TypeError, ValueError):
        value = np.nan
    rest = {k: v for k, v in params.items() if k != param}
    return {"white_box": bool(getattr(obj, "white_box", True)), "budget": value, "budget_param": param,
            "family": f"{obj.name}:{sorted(rest.items())}"}


def _best(row) -> float:
    v = [row.get("defended_gain"), row.get("defended_gain_adaptive")]
    v = [float(x) for x in v if x is not None and np.isfinite(float(x))]
    return max(v) if v else np.nan


def compute_flags(summary: pd.DataFrame, probes: pd.DataFrame | None, methods: pd.DataFrame | None = None
                  ) -> pd.DataFrame:
    """All flags of a run, one row per (metric, attack, defense, flag)."""
    info = _attack_info(summary["attack"].unique(), methods)
    probes = probes if probes is not None else pd.DataFrame()
    out: list[dict[str, Any]] = []
    pr = {(r["metric"], r["defense"]): r for r in probes.to_dict("records")} if len(probes) else {}

    def add(m, a, d, flag, detail):
        out.append({"metric": m, "attack": a, "defense": d, "flag": flag, "detail": detail})

    for (m, d), g in summary.groupby(["metric", "defense"], sort=False):
        p = pr.get((m, d))
        recs = g.to_dict("records")
        if p is not None:
            gn, fin = p.get("grad_norm"), p.get("grad_finite")
            zero = (gn is not None and np.isfinite(gn) and gn <= ZERO_GRAD) or (fin is not None and fin == 0)
            if zero:
                detail = f"mean ‖∇‖ = {gn:.3g} on {int(p.get('images') or 0)} probe image(s)"
                if isinstance(p.get("note"), str) and p["note"]:
                    detail += f" ({p['note']})"
                agn = p.get("adaptive_grad_norm")
                if agn is not None and np.isfinite(agn):
                    detail += f"; through the {p.get('wrapper')} wrapper ‖∇‖ = {p['adaptive_grad_norm']:.3g}"
                for r in recs:
                    if info[r["attack"]]["white_box"]:
                        add(m, r["attack"], d, "zero-gradient", detail)
            sp = p.get("score_spread")
            if sp is not None and np.isfinite(sp) and sp > SPREAD_EPS:
                for r in recs:
                    add(m, r["attack"], d, "randomized-score",
                        f"two draws on the same image differ by up to {sp:.3g}·R")
        white = [r for r in recs if info[r["attack"]]["white_box"]]
        black = [r for r in recs if not info[r["attack"]]["white_box"]]
        if white and black:
            wb = max((float(r["defended_gain"]) for r in white if np.isfinite(float(r["defended_gain"]))),
                     default=np.nan)
            for b in black:
                bb = _best(b)
                if np.isfinite(bb) and bb > 0 and (not np.isfinite(wb) or bb > wb + BB_MARGIN):
                    detail = f"{b['attack']}: defended gain {bb:.3g} > best white-box transfer gain {wb:.3g}"
                    for r in white:
                        add(m, r["attack"], d, "blackbox-beats-whitebox", detail)
        fams: dict[str, list[dict]] = {}
        for r in recs:
            fams.setdefault(info[r["attack"]]["family"], []).append(r)
        for fam in fams.values():
            fam = [r for r in fam if np.isfinite(info[r["attack"]]["budget"])]
            if len({info[r["attack"]]["budget"] for r in fam}) < 2:
                continue
            fam.sort(key=lambda r: info[r["attack"]]["budget"])
            lo, hi = fam[0], fam[-1]
            du = float(hi["attack_gain"]) - float(lo["attack_gain"])
            dd = _best(hi) - _best(lo)
            if np.isfinite(du) and np.isfinite(dd) and du > BUDGET_MIN_GROWTH and dd < BUDGET_FLAT * du:
                detail = (f"budget {info[lo['attack']]['budget']:.3g}→{info[hi['attack']]['budget']:.3g}: "
                          f"undefended gain +{du:.3g}, defended gain {dd:+.3g}")
                for r in fam:
                    add(m, r["attack"], d, "flat-in-budget", detail)
        for r in recs:
            ga, gp = r.get("defended_gain_adaptive"), r.get("defended_gain_paired")
            if ga is not None and gp is not None and np.isfinite(ga) and np.isfinite(gp) and ga - gp > GAP:
                add(m, r["attack"], d, "transfer-underestimates",
                    f"defended gain: adaptive {ga:.3g} vs transfer {gp:.3g} on the same images")
            dev = max(float(r.get("robust_abs_gain", np.nan)), float(r.get("robust_abs_gain_adaptive", np.nan) or np.nan))
            if np.isfinite(dev) and dev >= COLLAPSE:
                add(m, r["attack"], d, "score-collapse", f"mean |clean − defended-attacked| = {dev:.3g}·R")
    return pd.DataFrame(out, columns=FLAG_COLUMNS)


def annotate(summary: pd.DataFrame, flags: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """``summary`` + ``adaptive_wrapper``, ``flags`` (names, comma-separated) and ``reliability``."""
    keys = ["metric", "attack", "defense"]
    wr = (rows.dropna(subset=["adaptive_wrapper"]).groupby(keys)["adaptive_wrapper"]
          .agg(lambda v: ",".join(sorted(set(v)))).rename("adaptive_wrapper"))
    fl = (flags.groupby(keys)["flag"].agg(lambda v: ",".join(dict.fromkeys(v))).rename("flags")
          if len(flags) else pd.Series(dtype=object, name="flags"))
    out = summary.drop(columns=["adaptive_wrapper", "flags", "reliability"], errors="ignore")
    out = out.merge(wr.reset_index(), on=keys, how="left") if len(wr) else out.assign(adaptive_wrapper=None)
    out = out.merge(fl.reset_index(), on=keys, how="left") if len(fl) else out.assign(flags=None)
    has_adapt = (out["robust_abs_gain_adaptive"].notna() if "robust_abs_gain_adaptive" in out
                 else pd.Series(False, index=out.index))
    flagged = out["flags"].notna() & (out["flags"].astype(str) != "")
    out["reliability"] = np.where(has_adapt, np.where(flagged, "adaptive-checked", "reliable"),
                                  np.where(flagged, "unreliable", "transfer-only"))
    return out


def annotate_worst(worst: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Worst case + how many of the defense's cells are unreliable / have an adaptive result."""
    if "reliability" not in summary.columns:
        return worst
    g = summary.groupby(["metric", "defense"])
    extra = pd.DataFrame({
        "unreliable_cells": g["reliability"].agg(lambda v: int(v.isin(["unreliable", "transfer-only"]).sum())),
        "adaptive_cells": g["robust_abs_gain_adaptive"].agg(lambda v: int(v.notna().sum())),
    }).reset_index()
    return worst.drop(columns=["unreliable_cells", "adaptive_cells"], errors="ignore").merge(
        extra, on=["metric", "defense"], how="left")
