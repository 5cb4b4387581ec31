"""Entries: one JSON per defense × metric × suite, validated against ``schemas/entry.schema.json``.

``entry_scores`` turns a defense's per-image rows (one metric) into the entry's numbers with the
engine's own aggregation (``evaluation.scores``, ``evaluation.flags``); ``iqaguard verify`` calls
it again on the evidence bundle's rows, so an entry agrees with its bundle by construction and a
changed number is found. Every score is ``{"value", "lo", "hi"}`` (95% bootstrap CI where the score
table defines one, else null); NaN becomes null.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from ..errors import InputError
from ..evaluation import score_table, scores
from ..evaluation.flags import annotate, annotate_worst, compute_flags
from ..evaluation.rows import ROW_COLUMNS
from .bundle import TEXT_COLUMNS
from .schema import check

FORMAT = "iqaguard-entry/1"
MAX_ENTRY_BYTES = 2_000_000
COST = ("defense_seconds", "defense_forwards", "fit_seconds", "attack_seconds", "grad_calls", "queries")
OVERALL_EXTRA = ("fidelity", "quality", "quality_cost")


def slug(text: str) -> str:
    """A file-name-safe form of a spec: ``jpeg:quality=30`` -> ``jpeg_quality=30``."""
    s = re.sub(r"[^A-Za-z0-9._=+-]", "_", text).strip("._") or "x"
    return s[:120]


def number(v: Any) -> float | None:
    """A JSON number, or None for missing / non-finite values."""
    if v is None or isinstance(v, str):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def score(row: dict[str, Any], name: str) -> dict[str, float | None]:
    return {"value": number(row.get(name)), "lo": number(row.get(f"{name}_lo")), "hi": number(row.get(f"{name}_hi"))}


# -- rows <-> JSON ---------------------------------------------------------------------------
def rows_to_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """The per-image rows as JSON-safe records: floats exact, NaN as null, ±inf as "inf"/"-inf"
    (an unchanged image's PSNR is inf, an abstained certificate's bound ±inf: both are results)."""
    cols = [c for c in ROW_COLUMNS if c in rows.columns]
    return [{k: _json_value(v) for k, v in r.items()} for r in rows[cols].to_dict("records")]


def _json_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def records_to_rows(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Records back to the store's row frame: numeric columns as float64, text as object."""
    df = pd.DataFrame.from_records(records)
    for c in df.columns:
        if c in TEXT_COLUMNS:
            df[c] = df[c].astype(object).where(df[c].notna(), None)
        elif c == "lower_better":
            df[c] = df[c].astype(bool)
        else:           # "inf"/"-inf" parse to ±inf
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    return df


# -- the numbers of an entry -----------------------------------------------------------------
def entry_scores(rows: pd.DataFrame, probes: pd.DataFrame, attack_methods: pd.DataFrame, seed: int,
                 budgets: dict[str, str], short: dict[str, str] | None = None) -> dict[str, Any]:
    """``overall`` (worst case over attacks + the two axes), ``attacks`` (per attack), ``cost``,
    ``flags`` of one metric × one defense."""
    summary = scores.summarize(rows, seed=seed)
    worst = scores.worst_case(rows, seed=seed)
    flags = compute_flags(summary, probes, attack_methods)
    summary = annotate(summary, flags, rows)
    worst = annotate_worst(worst, summary)
    two = scores.two_axis(worst)
    if len(worst) != 1 or len(two) != 1:
        raise InputError("an entry holds exactly one metric × defense")
    w, t = worst.iloc[0].to_dict(), two.iloc[0].to_dict()
    overall = {n: score(w, n) for n in score_table.columns("worst") if n in w}
    overall.update({n: score(t, n) for n in OVERALL_EXTRA})
    for n in ("unreliable_cells", "adaptive_cells"):
        if n in w:
            overall[n] = score(w, n)
    attacks = []
    for r in summary.to_dict("records"):
        fl = [f for f in str(r.get("flags") or "").split(",") if f]
        attacks.append({"spec": r["attack"], "short": (short or {}).get(r["attack"], r["attack"]), "budget": budgets.get(r["attack"], ""),
                        "scores": {n: score(r, n) for n in score_table.columns("summary") if n in r},
                        "reliability": str(r.get("reliability") or ""),
                        "adaptive_wrapper": None if r.get("adaptive_wrapper") is None or
                        (isinstance(r.get("adaptive_wrapper"), float) and math.isnan(r["adaptive_wrapper"]))
                        else str(r["adaptive_wrapper"]),
                        "flags": fl})
    cost = {}
    for c in COST:
        v = pd.to_numeric(rows[c], errors="coerce") if c in rows.columns else pd.Series(dtype=float)
        cost[c] = {"value": number(v.mean()) if v.notna().any() else None, "lo": None, "hi": None}
    flag_list = [{"attack": str(f["attack"]), "flag": str(f["flag"]), "detail": str(f["detail"])}
                 for f in flags.to_dict("records")]
    return {"overall": overall, "attacks": attacks, "cost": cost, "flags": flag_list}


# -- files -----------------------------------------------------------------------------------
def read_json(path: Path, limit: int = MAX_ENTRY_BYTES) -> Any:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if size > limit:
        raise InputError(f"{path}: {size} bytes, more than the {limit} allowed")
    try:
        return json.loads(path.read_text("utf-8"), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def validate_entry(data: Any, source: str | Path) -> dict[str, Any]:
    """The entry if it is valid; else InputError ``<file>: <field>: <problem>``."""
    check(data, "entry", str(source))
    return data


def load_entry(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    return validate_entry(read_json(path), path)


def entry_files(root: str | Path) -> Iterator[Path]:
    """``<root>/<suite>/<metric>/<defense>.json`` (any depth), in sorted order."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"entries folder {str(root)!r} does not exist")
    yield from sorted(p for p in root.rglob("*.json") if p.is_file())


def load_entries(root: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every entry under ``root``, validated; the first invalid one raises (file and field named)."""
    return [(p, load_entry(p)) for p in entry_files(root)]


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n", "utf-8")
    tmp.replace(path)
    return path
