"""Synthetic leaderboard entries built with the real code path (``entry_scores`` on hand-made rows,
``write_bundle``), so schema, site and browser tests need no benchmark run."""
from __future__ import annotations

import io
import zlib
import json

import numpy as np
import pandas as pd
import pytest

from iqaguard.leaderboard.bundle import FORMAT as BUNDLE_FORMAT, write_bundle
from iqaguard.leaderboard.entries import FORMAT, entry_scores, records_to_rows, rows_to_records, write_json
from iqaguard.leaderboard.suites import load_suite

HOSTILE = "<script>alert(1)</script>"
HOSTILE_PAPER = 'Robust <img src=x onerror="alert(2)"> paper </table><script>alert(3)</script>'


def synthetic_rows(defense: str, shift: float, n_img: int = 6, attacks=("ifgsm:eps=4/255", "pgd:eps=4/255"),
                   metric: str = "niqe", family: str = "purification") -> pd.DataFrame:
    """Rows whose defended-attacked scores move by ``shift``·R toward the attack's goal (lower-better NIQE)."""
    rng = np.random.default_rng(zlib.crc32(f"{defense}|{metric}".encode()))   # deterministic across runs
    lo, hi = 0.0, 20.0
    rows = []
    for a in attacks:
        for i in range(n_img):
            c = 8 + rng.normal()
            dc = c + 0.2 * rng.normal()
            rows.append({"cell": f"{defense}{a}{i}", "run_id": "r", "metric": metric, "attack": a, "defense": defense,
                         "dataset": "bundled", "image": f"img{i}", "family": family, "clear": c, "attacked": c - 4,
                         "defended_clear": dc, "defended_attacked": dc - shift * (hi - lo),
                         "defended_attacked_adaptive": dc - 1.5 * shift * (hi - lo), "truth": -float(i % 3),
                         "truth_kind": "level", "group": f"g{i % 2}", "q_ssim_rgb_c_dc": 0.9 - shift,
                         "q_psnr_rgb_c_dc": 35.0, "q_ssim_rgb_c_da": 0.85, "q_psnr_rgb_c_da": 33.0,
                         "q_ssim_rgb_c_a": 0.95, "q_psnr_rgb_c_a": 40.0, "lower_better": True, "range_lo": lo,
                         "range_hi": hi, "seed": 0, "adaptive_wrapper": "bpda", "defense_seconds": 0.01,
                         "defense_forwards": 1.0, "attack_seconds": 0.5, "grad_calls": 10.0, "queries": 3.0})
    return pd.DataFrame(rows)


def _png(color) -> bytes:
    from PIL import Image

    yy, xx = np.mgrid[0:64, 0:96]
    arr = np.stack([xx * 255 // 96, yy * 255 // 64, np.full_like(xx, color)], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_entry(root, defense: str, shift: float, suite="quick", metric="niqe", paper="", name=None,
               family="purification", link="https://example.org/paper") -> "Path":
    """Write ``root/<suite>/<metric>/<defense>.json`` and its bundle; return the entry path."""
    import hashlib

    s = load_suite(suite)
    records = rows_to_records(synthetic_rows(defense, shift, metric=metric, family=family))
    attack_methods = pd.DataFrame([{"spec": a, "kind": "attack", "budget_param": "eps", "budget_value": 4 / 255,
                                    "white_box": 1, "info": "gradient"} for a in ("ifgsm:eps=4/255", "pgd:eps=4/255")])
    nums = entry_scores(records_to_rows(records), pd.DataFrame(), attack_methods, 0,
                        {"ifgsm:eps=4/255": "medium", "pgd:eps=4/255": "medium"})
    safe = "".join(ch if ch.isalnum() else "_" for ch in defense)[:40] or "x"
    folder = root / s.name / metric
    pngs = {"strip/clean.png": _png(10), "strip/a0_attacked.png": _png(120), "strip/a0_defended.png": _png(240)}
    manifest = {"format": BUNDLE_FORMAT, "suite": s.data, "metric": metric, "defense": defense, "command": ["test"],
                "seed": 0, "images": [f"img{i}" for i in range(6)], "adversarial": [],
                "strip": [{"attack": "ifgsm:eps=4/255", "image": "img0",
                           "files": {"clean": "strip/clean.png", "attacked": "strip/a0_attacked.png",
                                     "defended": "strip/a0_defended.png"},
                           "scores": {"clear": 8.0, "attacked": 4.0, "defended_attacked": 7.0}}],
                "probes": [], "attacks": json.loads(attack_methods.to_json(orient="records"))}
    bpath = write_bundle(folder / f"{safe}.evidence.zip", manifest, records, pngs)
    entry = {"format": FORMAT, "suite": {"name": s.name, "hash": s.hash},
             "metric": {"spec": metric, "short": metric, "mode": "NR", "lower_better": True, "score_range": [0.0, 20.0]},
             "defense": {"spec": defense, "short": defense, "name": name or defense, "family": family, "paper": paper,
                         "authors": "A. Author", "link": link, "weights_licence": "none", "differentiable": True,
                         "randomized": False},
             **nums,
             "provenance": {"iqaguard": "0.2.0", "git_sha": "0" * 40, "torch": "2.13.0", "device": "cpu", "seed": 0,
                            "suite_hash": s.hash, "dataset": "bundled", "dataset_hash": "a" * 64,
                            "date": "2026-11-29T00:00:00+00:00", "command": ["iqaguard", "submit", defense]},
             "evidence": {"bundle": bpath.name, "sha256": hashlib.sha256(bpath.read_bytes()).hexdigest(),
                          "bytes": bpath.stat().st_size}}
    return write_json(folder / f"{safe}.json", entry)


@pytest.fixture
def board_entries(tmp_path):
    """Three defenses and the no-defense baseline on two metrics (fidelity order: jpeg > median > hostile >
    no-defense), one with markup in its name."""
    root = tmp_path / "entries"
    for metric in ("niqe", "iqg-cnn"):
        make_entry(root, "no-defense", 0.3, metric=metric)
        make_entry(root, "jpeg:quality=50", 0.02, metric=metric, paper="JPEG paper")
        make_entry(root, "median-blur", 0.08, metric=metric, paper="Median paper")
        make_entry(root, HOSTILE, 0.2, metric=metric, paper=HOSTILE_PAPER, name=HOSTILE,
                   link="javascript:alert(4)")
    return root
