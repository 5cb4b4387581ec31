"""``iqaguard report``: rebuild the outputs of a run from its store alone.

The store is opened read-only; no metric, attack, defense or dataset is built, so a store
written on another machine (or whose weights are gone) reports the same.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..evaluation.outputs import Outputs, collect, short_names
from ..evaluation.store import Store
from .html import render_report


def report_from_store(store: str | Path, out: str | Path | None = None, run_id: str | None = None):
    """Rebuild results.csv, summary.csv, … and index.html for a run (the last one by default)."""
    from ..evaluation.runner import Result

    store = Path(store)
    if not store.is_file():
        raise InputError(f"store {str(store)!r} does not exist" if not store.exists()
                         else f"store {str(store)!r} is not a file")
    out_dir = Path(out) if out is not None else store.parent
    with Store(store, readonly=True) as st:
        res = collect(st, run_id, out_dir)
        if out_dir.resolve() != store.parent.resolve():
            _copy_artifacts(store.parent, out_dir)
        res.files["report"] = write_html(st, res, out_dir)
        prov = res.run["provenance"]
        return Result(res.rows, res.summary, res.worst, res.two_axis, res.run["run_id"], out_dir, st.path,
                      prov, files={"store": st.path, **res.files}, flags=res.flags)


def report_for_result(result) -> Path:
    """The HTML report of a finished run; an existing one is kept when the rerun changed nothing."""
    html = Path(result.out_dir) / "index.html"
    stamp = Path(result.out_dir) / ".iqaguard-outputs.json"
    if result.computed == 0 and result.errors == 0 and html.exists() and stamp.exists() \
            and html.stat().st_mtime >= stamp.stat().st_mtime:
        return html
    with Store(result.store, readonly=True) as st:
        res = collect(st, result.run_id, None)
        return write_html(st, res, Path(result.out_dir))


def write_html(st: Store, res: Outputs, out_dir: Path) -> Path:
    short = short_names(res.methods)
    strips = _strips(st, res, out_dir)
    for strip in strips:
        strip.update({k: short.get(strip[k], strip[k]) for k in ("metric", "attack", "defense")})
    prov = {**res.run["provenance"], "finished": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")}
    return render_report(_shorten(res.rows, short), _shorten(res.summary, short), prov, out_dir,
                         strips=strips, two_axis=_shorten(res.two_axis, short), worst=_shorten(res.worst, short),
                         flags=_shorten(res.flags, short))


def _shorten(df: pd.DataFrame, short: dict[str, str]) -> pd.DataFrame:
    cols = [c for c in ("metric", "attack", "defense") if c in df.columns]
    return df.assign(**{c: df[c].map(lambda v: short.get(v, v)) for c in cols}) if cols else df


def _strips(st: Store, res: Outputs, out_dir: Path, limit: int = 24) -> list[dict[str, Any]]:
    """Clean / attacked / defended images of the run's first image, per cell (where saved)."""
    rows = res.rows
    clean = out_dir / "clean" / "first.png"
    if not len(rows) or not clean.exists():
        return []
    first = rows["image"].iloc[0]
    adv = st.adversarial_paths(first)
    strips = []
    for r in rows[rows["image"] == first].itertuples():
        a = adv.get((r.metric, r.attack))
        dfd = out_dir / "defended" / f"{r.cell}.png"
        if a is None or not (out_dir / a).exists() or not dfd.exists():
            continue
        strips.append({"metric": r.metric, "attack": r.attack, "defense": r.defense, "image": first,
                       "clean": clean, "attacked": out_dir / a, "defended": dfd,
                       "scores": {"clear": r.clear, "attacked": r.attacked,
                                  "defended_attacked": r.defended_attacked}})
        if len(strips) >= limit:
            break
    return strips


def _copy_artifacts(src: Path, dst: Path) -> None:
    for sub in ("adversarial", "defended", "clean"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, dirs_exist_ok=True)
