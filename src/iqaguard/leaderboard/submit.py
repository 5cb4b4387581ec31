"""``iqaguard submit SPEC --suite NAME``: run a suite for one defense, write entries and evidence.

The run goes through the engine (``run_benchmark``) in a work folder; its batches are the plan's own
chunks, so ``iqaguard verify`` can recompute any of them bit for bit. A folder kept with ``--work``
resumes an interrupted submission and lets later submissions on the same suite reuse the transfer
attacks (per-image results do not depend on what the store held before). One entry and one
bundle per metric: ``<out>/<suite>/<metric>/<defense>.json`` and ``….evidence.zip``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import sys
import tempfile
import time
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import InputError
from ..evaluation.provenance import cpu
from ..registry import DATASETS, DEFENSES, METRICS, canonical, short_spec
from .bundle import FORMAT as BUNDLE_FORMAT, write_bundle
from .entries import FORMAT, entry_scores, records_to_rows, rows_to_records, slug, write_json
from .suites import Suite, load_suite

DEFAULT_ENTRIES = "leaderboard/entries"
SUBMISSION_FILE = "submission.json"     # in --work: the suite its runs belong to, and the defenses
META_FIELDS = ("paper", "authors", "link", "weights_licence")
# parameters that change a network's architecture: a needs-weights defense built with other values
# is a small test model, whose numbers must never reach the board
ARCH_PARAMS = {"n_feat", "scale_unetfeats", "scale_orsnetfeats", "num_cab", "kernel_size", "reduction",
               "num_feat", "num_conv"}


@lru_cache(maxsize=1)
def method_table() -> dict[str, Any]:
    return json.loads(resources.files("iqaguard.leaderboard").joinpath("methods.json").read_text("utf-8"))


def needs_weights() -> dict[str, str]:
    """Defense name -> published weights file, for defenses whose real checkpoints are not shipped."""
    return dict(method_table()["_needs_weights"])


def beyond_suite(suite: str) -> dict[str, str]:
    """Defense name -> why no entry on ``suite`` was computed here (its cost on this project's
    2-core machine), for defenses that run offline but far beyond the suite's hour."""
    return dict(method_table().get("_beyond_suite", {}).get(suite, {}))


def defense_meta(obj) -> dict[str, str]:
    """Paper, authors, link, weights licence: the method's own attributes, else the package table."""
    table = method_table().get(obj.name, {})
    return {k: str(getattr(obj, k, "") or table.get(k, "") or "") for k in META_FIELDS}


def check_real_weights(obj) -> None:
    """Refuse a needs-weights defense configured as a test model (other weights file or architecture)."""
    published = needs_weights().get(obj.name)
    if published is None:
        return
    defaults = DEFENSES.defaults(obj.name)
    for k, v in obj.params.items():
        if "weights" in k and k != "wdn_weights" and v not in ("", None) and Path(str(v)).name != published:
            raise InputError(f"{obj.name}: entries need the published weights {published!r}, not {Path(str(v)).name!r} "
                             f"(numbers from test models never go on the board)")
        if k in ARCH_PARAMS and v != defaults.get(k):
            raise InputError(f"{obj.name}: entries need the published architecture ({k}={defaults.get(k)!r}), got {v!r}")


def dataset_hash(dataset: str, limit: int) -> str:
    """SHA-256 over the dataset spec and the 8-bit pixels (and references) of the evaluated images."""
    ds = DATASETS.create(dataset)
    h = hashlib.sha256(canonical(ds).encode())
    for it in ds.subset(limit).items:
        h.update(b"\x1f" + it.id.encode())
        for x in [it.load()] + ([it.load_ref()] if it.load_ref is not None else []):
            h.update(str(tuple(x.shape)).encode())
            h.update((x.clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for r in df.to_dict("records"):
        rec = {}
        for k, v in r.items():
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, float) and not np.isfinite(v):
                v = None
            rec[k] = v
        out.append(rec)
    return out


def applicable_metrics(obj, metrics: list[str]) -> list[str]:
    """The suite's metrics this defense can protect; the others get no entry (said on stderr)."""
    keep = []
    for m in metrics:
        why = obj.unsupported(METRICS.create(m))
        if why is None:
            keep.append(m)
        else:
            print(f"no entry for {m}: {why}", file=sys.stderr)
    if not keep:
        raise InputError(f"defense {canonical(obj)!r} protects none of the suite's metrics ({', '.join(metrics)})")
    return keep


def metrics_with_results(rows: pd.DataFrame, failures: pd.DataFrame, metrics: list[str], work: Path) -> list[str]:
    """The suite's metrics that get an entry after the run. A metric none of whose cells could
    take this defense's output (no row, every cell refused with an input error, e.g. NIQE on the
    128² images ``resize`` returns) gets no entry, said on stderr; any other failure writes nothing."""
    if failures is None or failures.empty:
        return metrics
    keep = []
    for m in metrics:
        spec = canonical(METRICS.create(m))
        f = failures[failures["metric"] == spec]
        if len(f) and not (rows["metric"] == spec).any() and f["error"].str.startswith("InputError: ").all():
            print(f"no entry for {m}: {f['error'].iloc[0][len('InputError: '):]}", file=sys.stderr)
        elif len(f):
            raise InputError(f"{len(f)} cells of {m} failed in {work}: see its store; no entry written")
        else:
            keep.append(m)
    if not keep:
        raise InputError(f"no metric of the suite could score this defense's output ({', '.join(metrics)}); "
                         f"see {work}'s store")
    return keep


def submit(defense: str, suite: str | Path = "quick", out: str | Path = DEFAULT_ENTRIES, work: str | Path | None = None,
           device: str = "cpu", progress: bool = False, command: list[str] | None = None,
           metrics: list[str] | None = None) -> list[Path]:
    """Run ``suite`` for ``defense``; write one entry + bundle per metric; return the entry paths.
    ``work``: the run's folder, kept: empty, or one earlier submissions on the same suite used (an
    interrupted one is resumed; another defense reuses the transfer attacks), default: a temporary
    one, removed afterwards. ``metrics``: only these of the suite's metrics (an entry is per metric,
    and its cells do not depend on the others, so a costly defense can be split into jobs)."""
    s = suite if isinstance(suite, Suite) else load_suite(suite)
    obj = DEFENSES.create(defense)
    check_real_weights(obj)
    only = suite_metrics(s, metrics)
    if work is not None:
        work = Path(work)
        _claim_work(work, s, canonical(obj))
        return _submit(obj, defense, s, Path(out), work, device, progress, command, only)
    tmp = Path(tempfile.mkdtemp(prefix="iqaguard-submit-"))
    try:
        return _submit(obj, defense, s, Path(out), tmp, device, progress, command, only)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def suite_metrics(s: Suite, metrics: list[str] | None) -> list[str]:
    """The suite's metric specs to run: all, or those named (by any spec of the same metric)."""
    have = list(s.run_kwargs()["metrics"])
    if not metrics:
        return have
    by_canon = {canonical(METRICS.create(m)): m for m in have}
    picked = []
    for m in metrics:
        c = canonical(METRICS.create(m))
        if c not in by_canon:
            raise InputError(f"metric {m!r} is not in suite {s.name} (its metrics: {', '.join(have)})")
        picked.append(by_canon[c])
    return list(dict.fromkeys(picked))


def _claim_work(work: Path, s: Suite, d_spec: str) -> None:
    """Mark ``work`` as a folder of runs of suite ``s``, or check that it already is one.

    Such a folder is resumed after a crash, and shared by submissions of several defenses on the
    same suite: their transfer attacks (the undefended metric's) are computed once, as in a grid.
    Per-image results do not depend on what the store held before, so every entry is the one a
    fresh folder gives (tested)."""
    mark = work / SUBMISSION_FILE
    want = {"suite": s.name, "suite_hash": s.hash}
    if work.exists() and any(work.iterdir()):
        try:
            have = json.loads(mark.read_text("utf-8"))
        except (OSError, ValueError):
            raise InputError(f"--work {str(work)!r} is not empty and holds no submission "
                             f"(no valid {SUBMISSION_FILE}): give an empty folder") from None
        if not isinstance(have, dict) or any(have.get(k) != v for k, v in want.items()):
            raise InputError(f"--work {str(work)!r} holds submissions on another suite ({_describe(have)}), "
                             f"not {s.name} {s.hash[:12]}")
        print(f"reusing the work folder {work} (a resumed or further submission on suite {s.name})", file=sys.stderr)
        defenses = [d for d in have.get("defenses", []) if isinstance(d, str)]
    else:
        work.mkdir(parents=True, exist_ok=True)
        defenses = []
    write_json(mark, {**want, "defenses": list(dict.fromkeys(defenses + [d_spec]))})


def _describe(have: Any) -> str:
    if not isinstance(have, dict):
        return "unreadable"
    return f"suite {have.get('suite')} {str(have.get('suite_hash'))[:12]}"


def _submit(obj, defense: str, s: Suite, out: Path, work: Path, device: str, progress: bool,
            command: list[str] | None, metrics: list[str]) -> list[Path]:
    from ..evaluation.outputs import collect
    from ..evaluation.plan import make_plan
    from ..evaluation.runner import run_benchmark
    from ..evaluation.store import Store

    d_spec = canonical(obj)
    kw = s.run_kwargs()
    kw["metrics"] = applicable_metrics(obj, metrics)
    t0 = time.perf_counter()
    res = run_benchmark(defenses=[d_spec], out=work, device=device, progress=progress, **kw)
    wall = time.perf_counter() - t0
    kw["metrics"] = metrics_with_results(res.rows, res.failures, kw["metrics"], work)
    plan, _ = make_plan(kw["metrics"], kw["attacks"], [d_spec], kw["dataset"], kw["limit"], kw["seed"],
                        adaptive=kw["adaptive"], wrapper=kw["wrapper"], eot_k=kw["eot_k"],
                        train_images=kw["train_images"], cert_eps=kw["cert_eps"])
    with Store(res.store, readonly=True) as st:
        outp = collect(st, res.run_id)
        methods = outp.methods
        probes = st.probes_for(plan.metrics, [d_spec])
        adv = st.adversarial([plan.attack_key(m, a, i) for m in plan.metrics for a in plan.attacks
                              for i in plan.image_ids]
                             + [plan.adaptive_key(m, a, d_spec, i) for m in plan.metrics for a in plan.attacks
                                for i in plan.image_ids])
    short = dict(zip(methods["spec"], methods["short"].fillna(methods["spec"])))
    budgets = {a: s.budget(a) for a in plan.attacks}
    att_methods = methods[(methods["kind"] == "attack") & methods["spec"].isin(plan.attacks)]
    d_rec = methods[(methods["kind"] == "defense") & (methods["spec"] == d_spec)].iloc[0].to_dict()
    prov = res.provenance
    ds_hash = dataset_hash(kw["dataset"], kw["limit"])
    cmd = command if command is not None else ["iqaguard", "submit", defense, "--suite", s.name]
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    written = []
    d_short = short.get(d_spec, d_spec)
    for m_spec in plan.metrics:
        metric = METRICS.create(m_spec)
        records = rows_to_records(outp.rows[outp.rows["metric"] == m_spec])
        nums = entry_scores(records_to_rows(records), probes[probes["metric"] == m_spec], att_methods, kw["seed"],
                            budgets, short)
        hashes, pngs, strip = [], {}, []
        first = plan.image_ids[0]
        for a_spec in plan.attacks:
            for img in plan.image_ids:
                for kind, key in (("transfer", plan.attack_key(m_spec, a_spec, img)),
                                  ("adaptive", plan.adaptive_key(m_spec, a_spec, d_spec, img))):
                    rec = adv.get(key)
                    if rec is not None and (work / rec["path"]).is_file():
                        hashes.append({"attack": a_spec, "image": img, "kind": kind,
                                       "sha256": _sha256(work / rec["path"])})
            if not strip:       # one strip per entry (the first attack) keeps bundles small
                strip.append(_strip(work, plan, m_spec, a_spec, d_spec, first, adv, outp.rows, pngs, len(strip)))
        manifest = {"format": BUNDLE_FORMAT, "suite": s.data, "metric": m_spec, "defense": d_spec, "command": cmd,
                    "seed": kw["seed"], "images": plan.image_ids, "adversarial": hashes,
                    "strip": [x for x in strip if x], "probes": _records(probes[probes["metric"] == m_spec]),
                    "attacks": _records(att_methods)}
        folder = out / s.name / slug(short.get(m_spec, m_spec))
        bpath = write_bundle(folder / f"{slug(d_short)}.evidence.zip", manifest, records, pngs)
        entry = {
            "format": FORMAT,
            "suite": {"name": s.name, "hash": s.hash},
            "metric": {"spec": m_spec, "short": short.get(m_spec, m_spec), "mode": metric.mode,
                       "lower_better": bool(metric.lower_better), "score_range": [float(v) for v in metric.score_range]},
            "defense": {"spec": d_spec, "short": d_short, "name": obj.name, "family": str(d_rec["family"]),
                        **defense_meta(obj), "differentiable": bool(getattr(obj, "differentiable", True)),
                        "randomized": bool(getattr(obj, "randomized", False))},
            **nums,
            "provenance": {"iqaguard": str(prov.get("iqaguard")), "git_sha": str(prov.get("git_sha")),
                           "torch": str(prov.get("torch")), "device": str(prov.get("device")), "seed": int(kw["seed"]),
                           "suite_hash": s.hash, "dataset": str(plan.dataset), "dataset_hash": ds_hash, "date": date,
                           "command": cmd, "images": len(plan.image_ids), "wall_seconds": round(wall, 1),
                           "threads": int(prov.get("threads") or torch.get_num_threads()),
                           "cpu": str(prov.get("cpu") or cpu()),
                           "reused_cells": int(res.reused)},
            "evidence": {"bundle": bpath.name, "sha256": _sha256(bpath), "bytes": bpath.stat().st_size},
        }
        written.append(write_json(folder / f"{slug(d_short)}.json", entry))
    return written


def _strip(work: Path, plan, m_spec, a_spec, d_spec, img, adv, rows, pngs, i) -> dict[str, Any] | None:
    """Clean / attacked / defended-attacked PNGs of the first image for one attack (those saved)."""
    r = rows[(rows["metric"] == m_spec) & (rows["attack"] == a_spec) & (rows["image"] == img)]
    if not len(r):
        return None
    r = r.iloc[0]
    files = {}
    rec = adv.get(plan.attack_key(m_spec, a_spec, img))
    for kind, p in (("clean", work / "clean" / "first.png"), ("attacked", work / rec["path"] if rec else None),
                    ("defended", work / "defended" / f"{r['cell']}.png")):
        if p is not None and p.is_file():
            name = "strip/clean.png" if kind == "clean" else f"strip/a{i}_{kind}.png"
            pngs[name] = p.read_bytes()
            files[kind] = name
    scores = {k: (None if pd.isna(r[k]) else float(r[k])) for k in ("clear", "attacked", "defended_attacked")}
    return {"attack": a_spec, "image": img, "files": files, "scores": scores} if files else None
