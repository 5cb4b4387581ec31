"""``iqaguard verify ENTRY``: does the entry follow from its evidence, and the evidence from the code?

1. Every number of the entry is recomputed from the bundle's per-image rows with the engine's own
   aggregation (``entries.entry_scores``); they must agree to 1e-9 (relative) — the same arithmetic.
2. A seeded random sample of the bundle's cells (attack × image) is recomputed from scratch, each
   image alone through ``run_benchmark(..., images=[image])``: the engine computes one image at a
   time and derives every draw from (seed, cell, image), so a cell alone is the cell in its suite
   run (tested in ``tests/evaluation/test_determinism.py``). The clean, attacked, defended-clean,
   defended-attacked and adaptive scores must agree within ``tolerance`` × the metric's range R
   (default 1e-3·R: room for floating-point reordering across machines, far below any effect the
   board reports). The SHA-256 of each recomputed adversarial PNG is compared with the bundle's
   and the count reported.
Any disagreement names the cell and both values.
"""
from __future__ import annotations

import functools
import hashlib
import math
import random
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..errors import InputError
from ..evaluation.provenance import cpu
from .bundle import read_bundle
from .entries import entry_scores, load_entry, records_to_rows
from .suites import content_hash, suite_from_data

DEFAULT_SAMPLE = 4
DEFAULT_TOLERANCE = 1e-3
ENTRY_RTOL = 1e-9
SCORE_COLUMNS = ("clear", "attacked", "defended_clear", "defended_attacked", "defended_attacked_adaptive")


@dataclass
class Report:
    entry: Path
    checked_numbers: int = 0
    cells: list[tuple[str, str]] = field(default_factory=list)
    compared: int = 0
    images_identical: int = 0
    images_compared: int = 0
    problems: list[str] = field(default_factory=list)
    not_recomputed: str = ""     # why the sampled cells were not recomputed (inputs differ here)

    @property
    def ok(self) -> bool:
        return not self.problems


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=ENTRY_RTOL, abs_tol=1e-12)
    return a == b


def _compare(path: str, got: Any, want: Any, out: list[str]) -> int:
    """Walk entry (got) and recomputed (want) together; record each differing leaf; count leaves."""
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            out.append(f"{path}: entry has fields {sorted(got) if isinstance(got, dict) else got!r}, "
                       f"recomputed {sorted(want)}")
            return 1
        return sum(_compare(f"{path}.{k}" if path else k, got[k], want[k], out) for k in want)
    if isinstance(want, list) and want and isinstance(want[0], dict) and "spec" in want[0]:
        if not isinstance(got, list) or [g.get("spec") for g in got] != [w["spec"] for w in want]:
            out.append(f"{path}: entry lists {[g.get('spec') for g in got] if isinstance(got, list) else got!r}, "
                       f"recomputed {[w['spec'] for w in want]}")
            return 1
        return sum(_compare(f"{path}[{w['short']}]", g, w, out) for g, w in zip(got, want))
    if not _same(got, want):
        out.append(f"{path}: entry {got!r}, recomputed {want!r}")
    return 1


def entry_files(paths: list[str | Path]) -> list[Path]:
    """The entry JSONs named by ``paths``: files as given, folders searched recursively (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("*.json"))
            if not found:
                raise InputError(f"no entry JSON under {str(p)!r}")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(f"no such entry or folder: {str(p)!r}")
    return list(dict.fromkeys(out))


def pick_entries(files: list[Path], k: int | None, seed: int) -> list[Path]:
    """The entries whose cells are recomputed: all (``k`` None), else a seeded sample of ``k``."""
    if k is None:
        return list(files)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise InputError(f"--entries must be a non-negative integer, got {k!r}")
    return random.Random(seed).sample(files, min(k, len(files)))


def verify(entry_path: str | Path, sample: int = DEFAULT_SAMPLE, seed: int = 0, tolerance: float = DEFAULT_TOLERANCE,
           device: str = "cpu", work: str | Path | None = None, log: Callable[[str], None] | None = None) -> Report:
    """Check ``entry_path`` against its bundle and a sample of recomputed cells. ``work``: folder for
    the recomputation (kept; default a temporary one, removed afterwards)."""
    if not isinstance(sample, int) or isinstance(sample, bool) or sample < 0:
        raise InputError(f"--sample must be a non-negative integer, got {sample!r}")
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise InputError(f"--tolerance must be in [0, 1), got {tolerance!r}")
    entry_path = Path(entry_path)
    entry = load_entry(entry_path)
    bpath = entry_path.parent / entry["evidence"]["bundle"]
    bundle = read_bundle(bpath)
    rep = Report(entry_path)
    digest = hashlib.sha256(bpath.read_bytes()).hexdigest()
    if digest != entry["evidence"]["sha256"]:
        rep.problems.append(f"evidence.sha256: entry {entry['evidence']['sha256']}, bundle file {digest}")
    man = bundle.manifest
    suite = suite_from_data(man["suite"], f"bundle {str(bpath)!r} manifest.json suite")
    for what, got, want in (("suite.hash", entry["suite"]["hash"], content_hash(man["suite"])),
                            ("metric.spec", entry["metric"]["spec"], man["metric"]),
                            ("defense.spec", entry["defense"]["spec"], man["defense"]),
                            ("provenance.seed", entry["provenance"]["seed"], man["seed"])):
        if got != want:
            rep.problems.append(f"{what}: entry {got!r}, bundle {want!r}")
    if rep.problems:
        return rep

    # 1. the entry from the bundle's rows
    rows = records_to_rows(bundle.rows)
    if set(rows["metric"]) != {man["metric"]} or set(rows["defense"]) != {man["defense"]}:
        rep.problems.append("bundle rows: other metrics or defenses than the entry's")
        return rep
    short = {a["spec"]: a["short"] for a in entry["attacks"]}
    budgets = {a["spec"]: a["budget"] for a in entry["attacks"]}
    nums = entry_scores(rows, pd.DataFrame.from_records(man["probes"]), pd.DataFrame.from_records(man["attacks"]),
                        int(man["seed"]), budgets, short)
    rep.checked_numbers = _compare("", {k: entry[k] for k in nums}, nums, rep.problems)
    if log:
        log(f"entry vs bundle rows: {rep.checked_numbers} values compared, "
            f"{len(rep.problems)} differ (relative tolerance {ENTRY_RTOL:g})")
    if rep.problems or sample == 0:
        return rep

    # 2. a sample of the bundle's cells recomputed from scratch, from the entry's own input images
    rep.not_recomputed = _other_inputs(suite, entry["provenance"])
    if rep.not_recomputed:
        if log:
            log(rep.not_recomputed)
        return rep
    cells = sorted({(r["attack"], r["image"]) for r in bundle.rows})
    picks = random.Random(seed).sample(cells, min(sample, len(cells)))
    rep.cells = picks
    for a, img in picks:
        if img not in man["images"]:
            rep.problems.append(f"cell {a} × {img}: image not in the bundle's image list")
            return rep
    with _threads(entry["provenance"].get("threads")):
        if work is not None:
            _recompute(rep, man, suite, picks, bundle, Path(work), device, tolerance, log)
            return rep
        tmp = Path(tempfile.mkdtemp(prefix="iqaguard-verify-"))
        try:
            _recompute(rep, man, suite, picks, bundle, tmp, device, tolerance, log)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return rep


@functools.lru_cache(maxsize=None)
def _dataset_hash(dataset: str, limit: int) -> str:
    """Once per suite dataset in a process: ``verify-entries`` checks many entries of one suite."""
    from .submit import dataset_hash

    return dataset_hash(dataset, limit)


def _other_inputs(suite, prov: dict) -> str:
    """Why recomputing cells here would be meaningless, or "": the bundled distortions run through
    float kernels chosen by the CPU (oneDNN convolutions among them), so another machine can build
    other 8-bit input images (seen on an AVX2-only CPU and an AVX-512 AMD EPYC). Entries
    hash their input pixels (``provenance.dataset_hash``); on other inputs no cell could match."""
    kw = suite.run_kwargs()
    here, want = _dataset_hash(kw["dataset"], kw["limit"]), prov["dataset_hash"]
    if here == want:
        return ""
    cpus = f"; CPU here {cpu()}, entry's {prov['cpu']}" if prov.get("cpu") else ""
    return (f"cells not recomputed: this machine builds other input images than the entry's (dataset hash "
            f"{here[:12]}…, entry {want[:12]}…; the bundled distortions use CPU-specific float kernels{cpus})")


@contextmanager
def _threads(n: int | None):
    """Recompute at the entry's torch thread count: other counts reorder float sums in the kernels,
    which can flip a gradient sign and change an adversarial PNG's bytes (scores stay within the
    tolerance). Entries without the field run at the current count."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _recompute(rep: Report, man, suite, picks, bundle, tmp: Path, device, tolerance, log) -> None:
    """Run each sampled cell again, alone, and compare its scores and adversarial PNG hashes."""
    kw = suite.run_kwargs()
    from ..evaluation.plan import make_plan
    from ..evaluation.runner import run_benchmark
    from ..evaluation.store import Store

    by_key = {(r["attack"], r["image"]): r for r in bundle.rows}
    hashes = {(h["attack"], h["image"], h["kind"]): h["sha256"] for h in man["adversarial"]}
    kw_run = {k: v for k, v in kw.items() if k not in ("metrics", "attacks", "dataset")}
    for a, img in sorted(picks):
        if log:
            log(f"recomputing {a} × {img}")
        res = run_benchmark([man["metric"]], [a], [man["defense"]], out=tmp, device=device, images=[img],
                            dataset=kw["dataset"], **kw_run)
        new = {(r["attack"], r["image"]): r for r in res.rows.to_dict("records")}
        plan, _ = make_plan([man["metric"]], [a], [man["defense"]], kw["dataset"], kw["limit"], kw["seed"],
                            adaptive=kw["adaptive"], wrapper=kw["wrapper"], eot_k=kw["eot_k"],
                            train_images=kw["train_images"], cert_eps=kw["cert_eps"], images=[img])
        keys = {"transfer": plan.attack_key(man["metric"], a, img),
                "adaptive": plan.adaptive_key(man["metric"], a, man["defense"], img)}
        with Store(res.store, readonly=True) as st:
            adv = st.adversarial(list(keys.values()))
        old, cur = by_key[(a, img)], new.get((a, img))
        if cur is None:
            rep.problems.append(f"cell {a} × {img}: not recomputed")
            continue
        r = float(old["range_hi"]) - float(old["range_lo"])
        for col in SCORE_COLUMNS:
            v0, v1 = old.get(col), cur.get(col)
            v1 = None if v1 is None or (isinstance(v1, float) and math.isnan(v1)) else float(v1)
            rep.compared += 1
            if (v0 is None) != (v1 is None) or (v0 is not None and abs(v0 - v1) > tolerance * r):
                rep.problems.append(f"cell {a} × {img}: {col}: bundle {v0!r}, recomputed {v1!r} "
                                    f"(tolerance {tolerance:g}·R = {tolerance * r:.3g})")
        for kind, key in keys.items():
            rec, want = adv.get(key), hashes.get((a, img, kind))
            if rec is not None and want is not None:
                rep.images_compared += 1
                rep.images_identical += hashlib.sha256((tmp / rec["path"]).read_bytes()).hexdigest() == want
