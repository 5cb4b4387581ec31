"""``iqaguard leaderboard build``: a static site from entry JSONs (and their bundles' images).

Nothing from an entry or a bundle is executed or trusted as markup: entries are validated against
the schema, bundles by ``bundle.read_bundle``, every string goes through Jinja2 autoescaping, links
are rendered only when they are ``http(s)://`` URLs, and strip images are decoded and re-encoded.
Tables and plots come from the run report's code (``report.html``: ``_table``, the shared
``_common.html.j2`` macros, the trade-off plot), so both look and sort alike, offline.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import ChoiceLoader, Environment, PackageLoader, StrictUndefined

from ..errors import InputError
from ..evaluation import score_table
from ..report.html import NAN_TEXT, _header, _png_b64, _table, _tradeoff_plot, format_number
from ..spec import parse_spec
from .bundle import read_bundle
from .entries import load_entries, slug
from .suites import SUITES, load_suite

RANK_FORMULA = ("Defenses are ranked on two axes, adaptive worst case first: (1) score fidelity = 1 − clip(score_error, 0, 1), "
                "where score_error = mean over images of the worst, over every attack of the suite and over the transfer "
                "and adaptive (BPDA/EOT/direct) attacked images, of |c − dc|/R + max(s·(d − dc)/R, 0); the overview ranks "
                "by fidelity gain = the mean, over the metrics a defense has an entry for, of its fidelity minus "
                "no-defense's fidelity on the same metric, so that defenses which cover different metrics (a trained "
                "defense needs a differentiable metric; a resizing one cannot feed NIQE) compare on what they add, not "
                "on which metrics they cover; (2) ties are broken by quality preservation = "
                "RGB SSIM(c, dc) + min(PSNR, 100)/40 averaged over metrics (3.5 = lossless; training and certified "
                "defenses leave the image untouched). Pareto = no other defense is at least as good on both and "
                "better on one.")
BASELINE = "no-defense"     # the defense every other is measured against in the overview
OVERVIEW_HEADERS = {          # the board's own columns: (meaning, better direction)
    "rank": ("order by fidelity gain, then mean quality (1 = best)", "lower"),
    "fidelity gain": ("mean over the defense's metrics of its fidelity minus no-defense's on that metric", "higher"),
    "mean fidelity": ("mean fidelity over the defense's own metrics; not comparable between defenses that cover "
                      "different metrics", "higher"),
    "mean quality": ("mean quality preservation over the defense's metrics (3.5 = lossless)", "higher"),
    "pareto": ("no other defense has fidelity gain ≥ and mean quality ≥, one strictly", None),
}
OVERALL_COLUMNS = ["fidelity", "score_error", "bias", "movement_worst", "movement_transfer_worst",
                   "movement_adaptive_worst", "quality", "quality_cost", "n_adaptive", "unreliable_cells", "n"]
COST_COLUMNS = {"defense_seconds": "defense seconds / image", "defense_forwards": "metric forwards / score",
                "fit_seconds": "fit seconds (trained)", "attack_seconds": "attack seconds / image",
                "grad_calls": "gradient calls / image", "queries": "queries / image"}
URL = re.compile(r"^https?://[^\s\"'<>]+$")


def _env() -> Environment:
    return Environment(loader=ChoiceLoader([PackageLoader("iqaguard.leaderboard", "templates"),
                                            PackageLoader("iqaguard.report", "templates")]),
                       autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _flat(scores: dict[str, dict[str, Any]], names=None) -> dict[str, Any]:
    """{"bias": {"value", "lo", "hi"}} -> {"bias": v, "bias_lo": lo, "bias_hi": hi}."""
    out: dict[str, Any] = {}
    for n, s in scores.items():
        if names is not None and n not in names:
            continue
        out[n] = np.nan if s["value"] is None else s["value"]
        if s["lo"] is not None or s["hi"] is not None:
            out[f"{n}_lo"] = np.nan if s["lo"] is None else s["lo"]
            out[f"{n}_hi"] = np.nan if s["hi"] is None else s["hi"]
    return out


def _weights_rule(entry: dict[str, Any], path: Path, needs: dict[str, str]) -> None:
    """Refuse entries of needs-weights defenses built as test models (read from the spec, nothing built)."""
    from ..registry import DEFENSES
    from .submit import ARCH_PARAMS

    name = entry["defense"]["name"]
    if name not in needs:
        return
    try:
        params = parse_spec(entry["defense"]["spec"]).params
        defaults = DEFENSES.defaults(name)
    except InputError as exc:
        raise InputError(f"{path}: defense.spec: {exc}") from None
    for k, v in params.items():
        bad = ("weights" in k and k != "wdn_weights" and v not in ("", None) and Path(str(v)).name != needs[name]) \
            or (k in ARCH_PARAMS and v != defaults.get(k))
        if bad:
            raise InputError(f"{path}: defense.spec: {name} with {k}={v!r} is not the published model "
                             f"(needs {needs[name]}); test-model numbers never go on the board")


def _page_name(suite: str, defense_short: str) -> str:
    return f"defense-{slug(suite)}-{slug(defense_short)}.html"


def _strips(path: Path, entry: dict[str, Any]) -> list[dict[str, Any]]:
    from PIL import Image

    bundle = read_bundle(path.parent / entry["evidence"]["bundle"])
    short = {a["spec"]: a["short"] for a in entry["attacks"]}
    out = []
    for s in bundle.manifest["strip"]:
        panels = []
        for key, label, score_key in (("clean", "clean", "clear"), ("attacked", "attacked", "attacked"),
                                      ("defended", "defended attacked", "defended_attacked")):
            png = None
            name = s["files"].get(key)
            if name in bundle.pngs:
                try:
                    img = Image.open(io.BytesIO(bundle.pngs[name]))
                    img.load()
                    png = _png_b64(np.asarray(img.convert("RGB")))
                except Exception:      # undecodable image: shown as missing, never passed through
                    png = None
            panels.append({"label": label, "png": png, "score": format_number(s["scores"].get(score_key))})
        out.append({"metric": entry["metric"]["short"], "attack": short.get(s["attack"], s["attack"]),
                    "defense": entry["defense"]["short"], "image": s["image"], "panels": panels})
    return out


def build(entries: str | Path, out: str | Path) -> Path:
    """Render ``out/index.html`` and one page per defense; return the index path."""
    from ..registry import DEFENSES
    from .submit import needs_weights

    loaded = load_entries(entries)
    needs = needs_weights()
    for path, e in loaded:
        _weights_rule(e, path, needs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = _env()
    suites: dict[str, list[tuple[Path, dict]]] = {}
    for path, e in loaded:
        suites.setdefault(e["suite"]["name"], []).append((path, e))
    registered = DEFENSES.names()
    sections = []
    for name in sorted(suites, key=lambda n: (SUITES.index(n) if n in SUITES else len(SUITES), n)):
        sections.append(_suite_section(name, suites[name], registered, needs, env, out))
    for name in SUITES:      # shipped suites without any entry still list what to run
        if name not in suites:
            sections.append(_suite_section(name, [], registered, needs, env, out))
    html = env.get_template("board.html.j2").render(
        title="iqaguard leaderboard", sections=sections, rank_formula=RANK_FORMULA, nan_text=NAN_TEXT,
        n_entries=len(loaded))
    index = out / "index.html"
    _write(index, html)
    return index


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _suite_section(name: str, items: list[tuple[Path, dict]], registered: list[str], needs: dict[str, str],
                   env: Environment, out: Path) -> dict[str, Any]:
    shipped = None
    if name in SUITES:
        shipped = load_suite(name)
    stale = [(p, e) for p, e in items if shipped is not None and e["suite"]["hash"] != shipped.hash]
    items = [(p, e) for p, e in items if (p, e) not in stale]
    metrics = list(dict.fromkeys(e["metric"]["short"] for _, e in items))
    if shipped is not None:
        from ..registry import METRICS, short_spec
        try:
            metrics = list(dict.fromkeys([short_spec(METRICS, m) for m in shipped.data["metrics"]] + metrics))
        except InputError:
            pass
    by_def: dict[str, list[tuple[Path, dict]]] = {}
    for p, e in items:
        by_def.setdefault(e["defense"]["short"], []).append((p, e))

    # overview: one row per defense, ranked on its fidelity gain over no-defense
    overview, plots, no_baseline = None, [], []
    if by_def:
        ov, no_baseline = _overview_rows(by_def, metrics)
        fid_cols = [c for m in metrics for c in [f"fidelity [{m}]"] if c in ov.columns]
        cols = ["rank", "fidelity gain", "mean fidelity", "mean quality"] + fid_cols + ["pareto", "unreliable cells",
                                                                                        "flag count"]
        overview = _table(ov, ["defense", "metrics"], cols)
        overview["headers"] = [_header(h["col"], (h["label"], *OVERVIEW_HEADERS[h["col"]]))
                               if h["col"] in OVERVIEW_HEADERS else h for h in overview["headers"]]
        for r, d in zip(overview["rows"], ov["defense"]):
            r["links"] = [_page_name(name, d), None]
        for m in metrics:
            of_m = [e for _, e in items if e["metric"]["short"] == m]
            if of_m:
                plots.append({"metric": m, "png": _front_plot(m, of_m)})

    # per metric
    per_metric = []
    for m in metrics:
        recs = [{"defense": e["defense"]["short"], "family": e["defense"]["family"],
                 **_flat(e["overall"], OVERALL_COLUMNS)} for _, e in items if e["metric"]["short"] == m]
        if recs:
            df = pd.DataFrame(recs)
            cols = [c for c in OVERALL_COLUMNS if c in df.columns]
            t = _table(df, ["defense"], cols)
            for r, d in zip(t["rows"], df["defense"]):
                r["links"] = [_page_name(name, d)]
            per_metric.append({"metric": m, "table": t})

    # per attack
    main = [c for c in score_table.main_summary()]
    per_attack: dict[str, list[dict]] = {}
    for _, e in items:
        for a in e["attacks"]:
            per_attack.setdefault(a["short"], []).append({
                "defense": e["defense"]["short"], "metric": e["metric"]["short"], "budget": a["budget"],
                "reliability": a["reliability"], "flags": ",".join(a["flags"]) or None,
                **_flat(a["scores"], main)})
    attack_tables = []
    for a, recs in per_attack.items():
        df = pd.DataFrame(recs)
        cols = [c for c in main if c in df.columns and df[c].notna().any()]
        t = _table(df, ["defense", "metric", "budget"], cols)
        for r, d in zip(t["rows"], df["defense"]):
            r["links"] = [_page_name(name, d), None, None]
        attack_tables.append({"attack": a, "table": t})

    # per defense pages, each with its defense's presets plotted against each other
    preset_plots: dict[str, dict[str, str | None]] = {}      # per defense name: rendered once, shown on each preset's page
    for d, es in by_def.items():
        dname = es[0][1]["defense"]["name"]
        if dname not in preset_plots:
            preset_plots[dname] = _preset_plots(dname, items)
        _defense_page(name, d, es, env, out, preset_plots[dname])

    missing = _not_on_board(name, items, registered, needs, metrics)
    return {"name": name, "hash": shipped.hash if shipped else (items[0][1]["suite"]["hash"] if items else ""),
            "description": shipped.data["description"] if shipped else "",
            "sizing": shipped.data.get("sizing", "") if shipped else "",
            "overview": overview, "no_baseline": no_baseline, "plots": plots, "per_metric": per_metric, "per_attack": attack_tables,
            "missing": missing, "stale": [str(p) for p, _ in stale], "n": len(items)}


def _not_on_board(name: str, items: list[tuple[Path, dict]], registered: list[str], needs: dict[str, str],
                  metrics: list[str]) -> list[dict[str, str]]:
    """Registered defenses without an entry, and costly ones on the metrics they have none for:
    why, and the command that produces the entry."""
    covered: dict[str, set[str]] = {}
    for _, e in items:
        covered.setdefault(e["defense"]["name"], set()).add(e["metric"]["short"])
    from .submit import beyond_suite

    costly = beyond_suite(name)
    missing = []
    for n in registered:
        cmd = f"iqaguard submit {n} --suite {name}"
        if n in covered:
            rest = [m for m in metrics if m not in covered[n]]
            if n in costly and rest:
                missing.append({"defense": n, "status": f"not evaluated on {', '.join(rest)}: {costly[n]}",
                                "command": f"{cmd} --metrics {','.join(rest)}"})
        elif n in needs:
            missing.append({"defense": n, "status": f"not evaluated: needs WEIGHTS ({needs[n]})",
                            "command": f"IQAGUARD_WEIGHTS=/folder/with/{needs[n]} {cmd}"})
        elif n in costly:
            missing.append({"defense": n, "status": f"not evaluated on this suite: {costly[n]}", "command": cmd})
        else:
            missing.append({"defense": n, "status": "not evaluated yet", "command": cmd})
    return missing


def _overview_rows(by_def: dict[str, list[tuple[Path, dict]]], metrics: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """One row per defense: per-metric fidelity with CI, the gain over no-defense, quality, flags; sorted, ranked.
    Also the metrics on which no-defense has no entry (they cannot count toward any gain)."""
    def value(v):
        return np.nan if v is None else v

    base = {e["metric"]["short"]: value(e["overall"]["fidelity"]["value"]) for _, e in by_def.get(BASELINE, [])}
    rows = []
    for d, es in by_def.items():
        row: dict[str, Any] = {"defense": d, "family": es[0][1]["defense"]["family"], "metrics": f"{len(es)}/{len(metrics)}"}
        fid, gain, qual = [], [], []
        for _, e in es:
            m, f = e["metric"]["short"], e["overall"]["fidelity"]
            for k in ("value", "lo", "hi"):
                row[f"fidelity [{m}]" + ("" if k == "value" else f"_{k}")] = value(f[k])
            fid.append(value(f["value"]))
            gain.append(value(f["value"]) - base.get(m, np.nan))
            qual.append(value(e["overall"]["quality"]["value"]))
        row["fidelity gain"], row["mean fidelity"], row["mean quality"] = (
            float(np.nanmean(v)) if np.isfinite(v).any() else np.nan for v in map(np.array, (gain, fid, qual)))
        row["unreliable cells"] = sum(int(e["overall"].get("unreliable_cells", {}).get("value") or 0) for _, e in es)
        row["flag count"] = sum(len(e["flags"]) for _, e in es)
        rows.append(row)
    from ..evaluation.scores import _pareto

    ov = pd.DataFrame(rows)
    ov["pareto"] = _pareto(ov["fidelity gain"].to_numpy(float), ov["mean quality"].to_numpy(float))
    ov = ov.sort_values(["fidelity gain", "mean quality"], ascending=[False, False], na_position="last")
    ov["rank"] = np.arange(1, len(ov) + 1)
    return ov.reset_index(drop=True), [m for m in metrics if m not in base]


def _front_plot(title: str, es: list[dict]) -> str | None:
    """Fidelity vs quality of these entries (one point each, labelled by defense spec), Pareto front marked."""
    from ..evaluation.scores import _pareto

    p = pd.DataFrame([{"defense": e["defense"]["short"], "fidelity": e["overall"]["fidelity"]["value"],
                       "quality": e["overall"]["quality"]["value"]} for e in es]).astype({"fidelity": float, "quality": float})
    p["pareto"] = _pareto(p["fidelity"].to_numpy(float), p["quality"].to_numpy(float))
    return _tradeoff_plot(title, p, True)


def _preset_plots(name: str, items: list[tuple[Path, dict]]) -> dict[str, str | None]:
    """Per metric, the presets of defense ``name`` against each other, so a submitter of several
    strengths (jpeg:quality=30/50/70) sees which are worth it."""
    by_metric: dict[str, list[dict]] = {}
    for _, e in items:
        if e["defense"]["name"] == name:
            by_metric.setdefault(e["metric"]["short"], []).append(e)
    return {m: _front_plot(f"{m}: presets of {name}", es) for m, es in by_metric.items()}


def _defense_page(suite: str, d: str, es: list[tuple[Path, dict]], env: Environment, out: Path,
                  preset_plots: dict[str, str | None]) -> None:
    meta = es[0][1]["defense"]
    link = meta["link"] if URL.match(meta["link"] or "") else None
    metrics = []
    for path, e in es:
        ov = pd.DataFrame([{"metric": e["metric"]["short"], **_flat(e["overall"], OVERALL_COLUMNS)}])
        att = pd.DataFrame([{"attack": a["short"], "budget": a["budget"], "reliability": a["reliability"],
                             "adaptive_wrapper": a["adaptive_wrapper"], "flags": ",".join(a["flags"]) or None,
                             **_flat(a["scores"], score_table.main_summary())} for a in e["attacks"]])
        cost = pd.DataFrame([{"metric": e["metric"]["short"], **_flat(e["cost"], COST_COLUMNS)}]).rename(columns=COST_COLUMNS)
        main = [c for c in score_table.main_summary() if c in att.columns and att[c].notna().any()]
        metrics.append({
            "metric": e["metric"]["short"],
            "overall": _table(ov, ["metric"], [c for c in OVERALL_COLUMNS if c in ov.columns]),
            "attacks": _table(att, ["attack", "budget"], main),
            "cost": _table(cost, ["metric"], [c for c in COST_COLUMNS.values() if c in cost.columns]),
            "flags": e["flags"], "strips": _strips(path, e), "presets_png": preset_plots.get(e["metric"]["short"]),
            "provenance": [(k, " ".join(v) if isinstance(v, list) else str(v)) for k, v in e["provenance"].items()],
            "file": path.name})
    html = env.get_template("defense.html.j2").render(
        title=f"{d} — iqaguard leaderboard ({suite})", suite=suite, defense=d, meta=meta, link=link,
        metrics=metrics, nan_text=NAN_TEXT)
    _write(out / _page_name(suite, d), html)
