"""From the store to scores and CSV files: everything downstream reads the store only.

``collect(store, run_id, out_dir)`` needs no model, weight or dataset: the run's cells, rows,
probes and the methods' metadata are all in the store (``store.py``), so a store written on
another machine can be reported and combined here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..atomic import replacing
from . import scores
from .flags import FLAG_COLUMNS, annotate, annotate_worst, compute_flags
from .store import Store

OUTPUTS = {"results": "results.csv", "summary": "summary.csv", "worst": "worst_case.csv",
           "two_axis": "tradeoff.csv", "flags": "flags.csv"}


@dataclass
class Outputs:
    rows: pd.DataFrame
    summary: pd.DataFrame
    worst: pd.DataFrame
    two_axis: pd.DataFrame
    flags: pd.DataFrame
    run: dict[str, Any]
    methods: pd.DataFrame
    errors: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


def run_rows(st: Store, run: dict[str, Any]) -> pd.DataFrame:
    """The rows of a run's cells, in plan order (whichever run computed them)."""
    cells = st.run_cells(run["run_id"])
    if cells is not None:
        rows = st.rows(keys=list(cells["cell"]))
        order = {k: i for i, k in enumerate(cells["cell"])}
    else:   # a run written before schema version 2: its cells are those matching its spec
        spec = run["spec"]
        rows = st.rows()
        rows = rows[rows["metric"].isin(spec["metrics"]) & rows["attack"].isin(spec["attacks"])
                    & rows["defense"].isin(spec["defenses"])]
        ds = rows["dataset"].dropna().unique()
        if len(ds) > 1 and "dataset" in spec:
            rows = rows[rows["dataset"] == rows["dataset"].iloc[0]]
        order = {}
    if not len(rows):
        return rows.reset_index(drop=True)
    rows = rows.assign(family=rows["family"].fillna("purification"))
    if order:
        rows = rows.assign(_o=rows["cell"].map(order)).sort_values("_o").drop(columns="_o")
    return rows.reset_index(drop=True)


def collect(st: Store, run_id: str | None, out_dir: str | Path | None = None) -> Outputs:
    """Score a run of ``st`` (the last one when ``run_id`` is None); write the CSVs to ``out_dir``."""
    run = st.run(run_id)
    if run is None:
        raise InputError(f"store {str(st.path)!r} holds no run" + (f" {run_id!r}" if run_id else ""))
    seed = int(run["spec"].get("seed", 0))
    rows = run_rows(st, run)
    methods = st.methods()
    summary = scores.summarize(rows, seed=seed) if len(rows) else pd.DataFrame()
    worst = scores.worst_case(rows, seed=seed) if len(rows) else pd.DataFrame()
    probes = st.probes_for(rows["metric"].unique(), rows["defense"].unique()) if len(rows) else None
    flags = compute_flags(summary, probes, methods) if len(summary) else pd.DataFrame(columns=FLAG_COLUMNS)
    summary = annotate(summary, flags, rows) if len(summary) else summary
    worst = annotate_worst(worst, summary) if len(worst) else worst
    two = scores.two_axis(worst) if len(worst) else pd.DataFrame()
    cells = st.run_cells(run["run_id"])
    errors = st.errors(keys=list(cells["cell"])) if cells is not None else st.errors()
    out = Outputs(rows, summary, worst, two, flags, run, methods, errors)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, frame in (("results", rows), ("summary", summary), ("worst", worst), ("two_axis", two),
                            ("flags", flags)):
            out.files[name] = write_csv(frame, out_dir / OUTPUTS[name])
    return out


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    with replacing(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def short_names(methods: pd.DataFrame) -> dict[str, str]:
    """Canonical spec -> display spec (non-default parameters only), from the methods table."""
    if not len(methods):
        return {}
    m = methods.dropna(subset=["short"])
    return dict(zip(m["spec"], m["short"]))
