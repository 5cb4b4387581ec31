"""Render a benchmark run as one self-contained HTML page.

The page must open anywhere (an archived CI artefact, an e-mail attachment, an air-gapped
machine), so nothing is fetched: CSS and the small table-sorting script are inline, plots are
matplotlib (Agg) PNGs and image strips are PNGs, all embedded as base64 ``data:`` URIs.
All text goes through Jinja2 autoescaping, because method names and specs are user input.
"""
from __future__ import annotations

import base64
import io
import json
import math
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, StrictUndefined

from ..errors import InputError
from ..evaluation import score_table

__all__ = ["render_report", "format_number", "SCORE_LEGEND"]

NAN_TEXT = "–"  # en dash: what every missing / NaN value shows as
STRIP_MAX_WIDTH = 256
KEY_COLUMNS = ("metric", "attack", "defense")

# column -> (label, one-line meaning, better direction: "lower" | "higher" | None for context), in the
# order of iqaguard.evaluation.score_table, which is the one list of score names and formulas.
SCORE_LEGEND: dict[str, tuple[str, str, str | None]] = score_table.legend()
_ADAPTIVE = "_adaptive"  # suffix scores.py gives the adaptive (BPDA/EOT) version of a score

# The columns the main summary table shows (the score table's ``main`` flag); the rest go under
# "all scores". A main column with no value in the run (e.g. adaptive, or similarity for a training
# defense) is hidden.
MAIN_SUMMARY = score_table.main_summary()
TRADEOFF_COLUMNS = ["fidelity", "score_error", "quality", "quality_cost", "quality_note", "pareto", "rank_score", "rank"]
COUNT_COLUMNS = {"n", "attacks", "n_adaptive", "rank", "unreliable_cells", "adaptive_cells"}
# text columns shown after the keys (badges), not as scores
TAG_COLUMNS = {"family": "family", "reliability": "status", "adaptive_wrapper": "adaptive wrapper", "flags": "flags"}  # shown as integers even when stored as floats
DEFAULT_RANK_FORMULA = ("rank = order of rank_score = mean of the defense's fidelity rank and quality rank "
                        "within the metric (1 = best)")

PROVENANCE_ORDER = ["iqaguard", "package_version", "version", "git_sha", "torch", "torch_version", "numpy",
                    "python", "python_version", "platform", "device", "cpu", "threads", "seed", "suite", "preset",
                    "spec", "started", "finished"]


def _legend_entry(col: str) -> tuple[str, str, str | None] | None:
    if col in SCORE_LEGEND:
        return SCORE_LEGEND[col]
    if col.endswith(_ADAPTIVE) and col[: -len(_ADAPTIVE)] in SCORE_LEGEND:
        label, desc, better = SCORE_LEGEND[col[: -len(_ADAPTIVE)]]
        return f"{label} (adaptive)", f"{desc}; adaptive attack (BPDA/EOT through the defense)", better
    return None


# --------------------------------------------------------------------------- formatting
def _is_missing(x: Any) -> bool:
    if x is None or x is pd.NA or x is pd.NaT:
        return True
    try:
        return isinstance(x, Real) and math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def format_number(x: Any) -> str:
    """Three significant digits (0.100, 12.3, 0.0123); integers as is; NaN/None as "–".

    Values ≥ 1000 are shown rounded to an integer rather than in exponent form, and values
    below 1e-4 in exponent form, so a column stays readable at a glance.
    """
    if _is_missing(x):
        return NAN_TEXT
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, Integral):
        return str(int(x))
    if not isinstance(x, Real):
        return str(x)
    v = float(x)
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    if abs(v) < 1e-4:
        return f"{v:.2e}"
    r = float(f"{v:.3g}")  # round to 3 significant digits first, so 0.9996 -> 1.00, not 1.000
    decimals = max(0, 2 - math.floor(math.log10(abs(r))))
    return f"{r:.{decimals}f}"


def _sort_key(x: Any) -> str:
    """Value used by the inline sorter: a number where possible, so NaN sorts last."""
    if _is_missing(x) or isinstance(x, (bool, np.bool_)):
        return ""
    if isinstance(x, Real):
        return repr(float(x))
    return str(x)


def _cell(row: dict, col: str) -> dict:
    """One table cell: the value, its CI when `col_lo`/`col_hi` exist, and a sort key."""
    v = row.get(col)
    if col in COUNT_COLUMNS and isinstance(v, float) and v.is_integer():
        v = int(v)  # a count that became float because of a NaN elsewhere
    cell = {"text": format_number(v) if not isinstance(v, str) else v, "sort": _sort_key(v), "ci": None}
    lo, hi = row.get(f"{col}_lo"), row.get(f"{col}_hi")
    if f"{col}_lo" in row and f"{col}_hi" in row and not (_is_missing(lo) and _is_missing(hi)):
        cell["ci"] = f"[{format_number(lo)}, {format_number(hi)}]"
    return cell


def _score_columns(df: pd.DataFrame, exclude: Iterable[str] = KEY_COLUMNS) -> list[str]:
    """Known score columns in legend order, then any other columns (CI bounds folded in)."""
    cols = [c for c in df.columns if c not in set(exclude) and c not in TAG_COLUMNS]
    folded = {f"{c}_{s}" for c in cols for s in ("lo", "hi") if f"{c}_lo" in df.columns and f"{c}_hi" in df.columns}
    cols = [c for c in cols if c not in folded]
    order = {c: i for i, c in enumerate(SCORE_LEGEND)}

    def pos(c: str) -> tuple[float, float]:
        base = c[: -len(_ADAPTIVE)] if c.endswith(_ADAPTIVE) else c
        return (order.get(base, math.inf), 0.5 if base != c else 0)

    return sorted(cols, key=pos)  # stable: unknown columns keep their order, after the known ones


def _split_summary(summary: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Main columns (the study's scores, in MAIN_SUMMARY order) and the rest that hold any data."""
    cols = _score_columns(summary)
    main = [c for c in MAIN_SUMMARY if c in cols and not summary[c].isna().all()]
    extra = [c for c in cols if c not in main and not summary[c].isna().all()]
    return main, extra


def _header(col: str, entry: tuple[str, str, str | None] | None = None) -> dict:
    """A column header; ``entry`` = (label, meaning, better) for columns outside the score legend."""
    label, desc, better = entry or _legend_entry(col) or (col, "", None)
    arrow = {"lower": "↓", "higher": "↑"}.get(better or "", "")
    return {"col": col, "label": label, "desc": desc, "better": better, "arrow": arrow}


def _table(df: pd.DataFrame, keys: list[str], cols: list[str]) -> dict:
    tags = [c for c in TAG_COLUMNS if c in df.columns and df[c].notna().any()]
    rows = []
    for r in df.to_dict("records"):  # keeps each column's type (ints stay ints)
        rows.append({"keys": [str(r[k]) if not _is_missing(r[k]) else NAN_TEXT for k in keys],
                     "tags": [_tag(c, r.get(c)) for c in tags],
                     "cells": [_cell(r, c) for c in cols]})
    return {"keys": keys, "tags": [TAG_COLUMNS[c] for c in tags], "headers": [_header(c) for c in cols], "rows": rows}


def _tag(col: str, v: Any) -> dict:
    """A badge cell: reliability status, the adaptive wrapper, or the list of tripped flags."""
    if _is_missing(v) or v == "":
        return {"badges": [], "sort": ""}
    names = [t for t in str(v).split(",") if t] if col == "flags" else [str(v)]
    kind = {"reliability": "status", "flags": "flag"}.get(col, "wrapper")
    return {"badges": [{"text": t, "cls": f"badge {kind} {kind}-{t}"} for t in names], "sort": str(v)}


def _groups(df: pd.DataFrame, by: str = "metric") -> list[tuple[str, pd.DataFrame]]:
    """Split by metric in order of first appearance; a frame without the column is one group."""
    if by not in df.columns:
        return [("all", df)]
    order = list(dict.fromkeys(df[by].tolist()))
    return [(str(g), df[df[by] == g]) for g in order]


# --------------------------------------------------------------------------- images
def _png_b64(img: Any, max_width: int = STRIP_MAX_WIDTH) -> str | None:
    """Array (H×W×3 uint8, or float in [0,1]) or PNG path → base64 PNG, at most max_width wide."""
    from PIL import Image

    if img is None:
        return None
    if isinstance(img, (str, Path)):
        p = Path(img)
        if not p.is_file():
            raise InputError(f"strips: image file {str(p)!r} does not exist")
        pil = Image.open(p)
        pil.load()
        pil = pil.convert("RGB")
    else:
        arr = np.asarray(img)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
            arr = np.moveaxis(arr, 0, -1)  # CHW given: make it HWC
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
            raise InputError(f"strips: image must be H×W×3 (or H×W), got shape {arr.shape}")
        if arr.dtype != np.uint8:
            if not np.issubdtype(arr.dtype, np.floating):
                raise InputError(f"strips: image must be uint8 or float in [0,1], got dtype {arr.dtype}")
            if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
                raise InputError("strips: float image must be finite and in [0,1]")
            arr = np.round(arr * 255).astype(np.uint8)
        pil = Image.fromarray(arr).convert("RGB")
    if pil.width > max_width:
        h = max(1, round(pil.height * max_width / pil.width))
        pil = pil.resize((max_width, h), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fig_b64(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _strips(strips: list[dict] | None) -> list[dict]:
    out = []
    for i, s in enumerate(strips or []):
        if not isinstance(s, dict):
            raise InputError(f"strips[{i}] must be a dict, got {type(s).__name__}")
        scores = s.get("scores") or {}
        panels = []
        for key, label, score_key in (("clean", "clean", "clear"), ("attacked", "attacked", "attacked"),
                                      ("defended", "defended attacked", "defended_attacked")):
            panels.append({"label": label, "png": _png_b64(s.get(key)), "score": format_number(scores.get(score_key))})
        out.append({k: str(s.get(k, NAN_TEXT)) for k in ("metric", "attack", "defense", "image")} | {"panels": panels})
    return out


# --------------------------------------------------------------------------- trade-off plot
def _tradeoff_points(summary: pd.DataFrame, two_axis: pd.DataFrame | None) -> list[tuple[str, pd.DataFrame, bool]]:
    """Per metric: a frame with defense, fidelity, quality (+ pareto, rank) and whether Pareto info exists."""
    out = []
    if two_axis is not None and {"defense", "fidelity", "quality"} <= set(two_axis.columns):
        for metric, g in _groups(two_axis):
            out.append((metric, g.reset_index(drop=True), "pareto" in g.columns))
        return out
    if not {"defense", "robust_abs_gain", "clear_similarity_score"} <= set(summary.columns):
        return out
    for metric, g in _groups(summary):
        pts = g.groupby("defense", sort=False).agg(
            fidelity=("robust_abs_gain",  # clipped to [0, 1] like evaluation.scores.two_axis
                      lambda v: float(np.clip(1 - np.nanmean(v.to_numpy(float)), 0, 1)) if v.notna().any() else np.nan),
            quality=("clear_similarity_score", lambda v: np.nanmean(v.to_numpy(float)) if v.notna().any() else np.nan),
        ).reset_index()
        out.append((metric, pts, False))
    return out


def _tradeoff_plot(metric: str, pts: pd.DataFrame, has_pareto: bool) -> str | None:
    from matplotlib.figure import Figure

    ok = pts[np.isfinite(pts["fidelity"].astype(float)) & np.isfinite(pts["quality"].astype(float))]
    if ok.empty:
        return None
    fig = Figure(figsize=(5.6, 4.2))
    ax = fig.add_subplot()
    x, y = ok["quality"].astype(float).to_numpy(), ok["fidelity"].astype(float).to_numpy()
    pareto = ok["pareto"].fillna(False).astype(bool).to_numpy() if has_pareto else np.zeros(len(ok), bool)
    ax.scatter(x[~pareto], y[~pareto], s=36, color="#6b7b8c", zorder=3, label="defense")
    if pareto.any():
        order = np.argsort(x[pareto])
        ax.plot(x[pareto][order], y[pareto][order], "-", color="#d9480f", lw=1.5, zorder=2)
        ax.scatter(x[pareto], y[pareto], s=48, color="#d9480f", zorder=4, label="Pareto front")
    for xi, yi, name in zip(x, y, ok["defense"].astype(str)):
        ax.annotate(name, (xi, yi), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.set_xlabel("quality preservation  (higher = better)")
    ax.set_ylabel("score fidelity  (higher = better)")
    ax.set_title(metric, fontsize=11)
    ax.grid(True, alpha=0.3)
    ax.margins(0.15)
    if pareto.any():
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _fig_b64(fig)


# --------------------------------------------------------------------------- header / provenance
def _counts(results: pd.DataFrame | None, summary: pd.DataFrame) -> list[tuple[str, int]]:
    frames = [f for f in (results, summary) if f is not None and len(f)]
    out = []
    for col, label in (("dataset", "datasets"), ("metric", "metrics"), ("attack", "attacks"), ("defense", "defenses")):
        vals = set()
        for f in frames:
            if col in f.columns:
                vals |= set(f[col].dropna().astype(str))
        if vals or col != "dataset":
            out.append((label, len(vals)))
    if results is not None and "image" in results.columns and len(results):
        out.append(("images", int(results["image"].nunique())))
    return out


def _provenance_rows(provenance: dict) -> list[tuple[str, str]]:
    keys = [k for k in PROVENANCE_ORDER if k in provenance] + [k for k in provenance if k not in PROVENANCE_ORDER]
    rows = []
    for k in keys:
        v = provenance[k]
        if isinstance(v, (dict, list, tuple)):
            text = json.dumps(v, sort_keys=True, default=str)
        elif isinstance(v, (Real, type(None))) and not isinstance(v, bool):
            text = format_number(v) if not isinstance(v, Integral) else str(v)
        else:
            text = str(v)
        rows.append((str(k), text))
    return rows


def _datasets(results: pd.DataFrame | None, provenance: dict) -> str:
    if results is not None and "dataset" in results.columns and len(results):
        return ", ".join(dict.fromkeys(results["dataset"].dropna().astype(str)))
    return str(provenance.get("dataset", ""))


# --------------------------------------------------------------------------- main entry
def _env() -> Environment:
    return Environment(loader=PackageLoader("iqaguard.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_report(results: pd.DataFrame | None, summary: pd.DataFrame, provenance: dict, out_dir: str | Path,
                  strips: list[dict] | None = None, two_axis: pd.DataFrame | None = None,
                  worst: pd.DataFrame | None = None, flags: pd.DataFrame | None = None) -> Path:
    """Write ``out_dir/index.html`` (self-contained) and return its path.

    `summary` has one row per (metric, attack, defense); any score column may be missing or
    NaN. `two_axis` (metric, defense, fidelity, quality, pareto, rank) adds Pareto fronts;
    without it, fidelity = 1 − mean robust_abs_gain over attacks and quality =
    clear_similarity_score, per defense. `worst` (metric, defense, robust_abs_gain_worst[_lo/_hi])
    fills the worst-case section. `strips` are dicts with clean/attacked/defended images.
    """
    if not isinstance(summary, pd.DataFrame):
        raise InputError(f"summary must be a pandas DataFrame, got {type(summary).__name__}")
    if results is not None and not isinstance(results, pd.DataFrame):
        raise InputError(f"results must be a pandas DataFrame or None, got {type(results).__name__}")
    for name, df in (("two_axis", two_axis), ("worst", worst), ("flags", flags)):
        if df is not None and not isinstance(df, pd.DataFrame):
            raise InputError(f"{name} must be a pandas DataFrame or None, got {type(df).__name__}")
    provenance = dict(provenance or {})

    keys = [k for k in ("defense", "attack") if k in summary.columns]
    main_cols, extra_cols = _split_summary(summary)
    summary_tables = [{"metric": m, "table": _table(g, keys, main_cols),
                       "extra": _table(g, keys, extra_cols) if extra_cols else None} for m, g in _groups(summary)]
    legend = [_header(c) for c in main_cols if _legend_entry(c)]
    extra_legend = [_header(c) for c in extra_cols if _legend_entry(c)]

    tradeoff = []
    for metric, pts, has_pareto in _tradeoff_points(summary, two_axis):
        cols = [c for c in TRADEOFF_COLUMNS if c in pts.columns]
        tradeoff.append({"metric": metric, "png": _tradeoff_plot(metric, pts, has_pareto),
                         "table": _table(pts, ["defense"], cols)})
    rank_formula = None
    if two_axis is not None:
        rank_formula = two_axis.attrs.get("rank_formula") or (
            DEFAULT_RANK_FORMULA if {"rank", "rank_score"} <= set(two_axis.columns) else None)

    worst_tables = []
    if worst is not None and len(worst):
        wkeys = [k for k in ("defense",) if k in worst.columns]
        if {"metric", "defense", "robust_abs_gain"} <= set(summary.columns) and {"metric", "defense"} <= set(worst.columns):
            mean = (summary.groupby(["metric", "defense"], sort=False)["robust_abs_gain"].mean()
                    .rename("robust_abs_gain_mean").reset_index())
            worst = worst.drop(columns=["robust_abs_gain_mean"], errors="ignore").merge(mean, on=["metric", "defense"], how="left")
        wcols = _score_columns(worst)
        worst_tables = [{"metric": m, "table": _table(g, wkeys, wcols)} for m, g in _groups(worst)]

    from ..evaluation.flags import FLAGS, RELIABILITY

    flag_rows = []
    if flags is not None and len(flags):
        for r in flags.to_dict("records"):
            flag_rows.append({k: (NAN_TEXT if _is_missing(r.get(k)) else str(r.get(k)))
                              for k in ("metric", "attack", "defense", "flag", "detail")})
    shown = "reliability" in summary.columns or flags is not None
    html = _env().get_template("index.html.j2").render(
        flag_rows=flag_rows,
        flag_legend=list(FLAGS.items()) if shown else [],
        status_legend=list(RELIABILITY.items()) if shown else [],
        title="iqaguard report",
        datasets=_datasets(results, provenance),
        counts=_counts(results, summary),
        summary_tables=summary_tables,
        legend=legend,
        extra_legend=extra_legend,
        tradeoff=tradeoff,
        two_axis_given=two_axis is not None,
        rank_formula=rank_formula,
        worst_tables=worst_tables,
        strips=_strips(strips),
        provenance=_provenance_rows(provenance),
        nan_text=NAN_TEXT,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)  # never leave a half-written page behind
    return path
