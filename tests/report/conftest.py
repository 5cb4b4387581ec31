"""Synthetic report inputs built by hand, shared by the HTML and browser tests."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

METRICS = ["psnr", "niqe"]
ATTACKS = ["ifgsm", "korhonen-et-al"]
DEFENSES = ["jpeg:quality=50", "median-blur", "<script>alert(1)</script>"]


def make_summary() -> pd.DataFrame:
    """Deterministic values: robust_abs_gain = 0.12345 + 0.1·defense index + 0.01·attack index."""
    rows = []
    for mi, m in enumerate(METRICS):
        for ai, a in enumerate(ATTACKS):
            for di, d in enumerate(DEFENSES):
                g = 0.12345 + 0.1 * di + 0.01 * ai
                rows.append(dict(
                    metric=m, attack=a, defense=d, n=8, attack_gain=0.6 + 0.01 * mi, movement_transfer=g / 2,
                    robust_abs_gain=g, robust_abs_gain_lo=g - 0.02, robust_abs_gain_hi=g + 0.03,
                    nonpurified_abs_gain=0.55, both_defended_abs_gain=np.nan if di == 1 else 0.2,
                    similarity_score=1.5 - 0.1 * di, clear_similarity_score=[1.3, 1.2, 1.6][di] + 0.05 * mi,
                    srocc_clear=0.9, srocc_defended_clear=0.85, srocc_defended_attacked=0.7 - 0.1 * di,
                    plcc_defended_attacked=0.72, krocc_defended_attacked=0.55, mean_time=0.0123 * (di + 1)))
    return pd.DataFrame(rows)


def make_results() -> pd.DataFrame:
    rows = [dict(metric=m, attack=a, defense=d, dataset="bundled", image=f"img{i}")
            for m in METRICS for a in ATTACKS for d in DEFENSES for i in range(8)]
    return pd.DataFrame(rows)


def make_two_axis(summary: pd.DataFrame) -> pd.DataFrame:
    t = (summary.groupby(["metric", "defense"], sort=False)
         .agg(fidelity=("robust_abs_gain", lambda v: 1 - v.mean()), quality=("clear_similarity_score", "mean"))
         .reset_index())
    t["pareto"] = t["defense"] != "median-blur"  # jpeg beats median-blur on both axes
    t["rank_score"] = [1.5, 2.5, 2.0] * 2
    t["rank"] = [1.0, 3.0, 2.0] * 2  # as evaluation.scores.two_axis: floats from Series.rank
    t.attrs["rank_formula"] = "rank = position by mean of fidelity and quality ranks"
    return t


def make_worst(summary: pd.DataFrame) -> pd.DataFrame:
    w = (summary.groupby(["metric", "defense"], sort=False)["robust_abs_gain"].max()
         .rename("robust_abs_gain_worst").reset_index())
    w["robust_abs_gain_worst_lo"] = w["robust_abs_gain_worst"] - 0.01
    w["robust_abs_gain_worst_hi"] = w["robust_abs_gain_worst"] + 0.01
    return w


def make_strips() -> list[dict]:
    """A smooth 96×384 gradient (so it compresses) and its perturbed / blurred versions."""
    h, w = 96, 384
    yy, xx = np.mgrid[0:h, 0:w]
    clean = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, 128)], -1).astype(np.uint8)
    noise = np.random.default_rng(0).integers(-8, 9, clean.shape)
    attacked = np.clip(clean.astype(int) + noise, 0, 255).astype(np.uint8)
    defended = (clean // 4 * 4).astype(np.uint8)
    return [dict(metric="psnr", attack="ifgsm", defense="jpeg:quality=50", image="img0", clean=clean,
                 attacked=attacked, defended=defended,
                 scores={"clear": 31.25, "attacked": 40.5, "defended_attacked": 32.0})]


PROVENANCE = {"package_version": "0.1.0", "git_sha": "0123abcd", "torch_version": "2.13.0", "device": "cpu",
              "seed": 0, "spec": {"metrics": METRICS}, "started": "2025-01-01T00:00:00", "finished": "2025-01-01T00:05:00",
              "python_version": "3.11", "platform": "linux"}


@pytest.fixture
def report_inputs():
    summary = make_summary()
    return dict(results=make_results(), summary=summary, provenance=dict(PROVENANCE), strips=make_strips(),
                two_axis=make_two_axis(summary), worst=make_worst(summary))
