"""Held-out accuracy of ``iqg-cnn`` / ``iqg-resnet`` on the bundled suite (SROCC vs distortion level).

Why a separate script: the training script (``train_learned_metrics.py``) must never read the
bundled evaluation photos; this one reads nothing else. SROCC(score, −level) is computed within
each (photo, type) group of the bundled suite (6 photos × 21 types × 5 levels at 256 px) and
averaged: overall, over the types seen in training, over the held-out (unseen) types, per KADID
family and per photo.

Usage::

    python scripts/evaluate_learned_metrics.py                       # shipped weights
    python scripts/evaluate_learned_metrics.py --weights-dir /tmp/w  # <dir>/<name>.safetensors
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

import iqaguard.metrics  # noqa: F401  (registers the built-in metrics)
from iqaguard.data.bundled import BundledDataset
from iqaguard.registry import METRICS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_learned_metrics import HELD_OUT_TYPES  # noqa: E402

# KADID-10k's seven categories (Lin, Hosu & Saupe 2019), restricted to the suite's types
FAMILIES = {
    "blur": ("gaussian_blur", "lens_blur", "motion_blur"),
    "colour": ("color_diffusion", "color_saturation_hsv", "color_saturation_lab", "color_quantization"),
    "compression": ("jpeg2000", "jpeg"),
    "noise": ("white_noise", "impulse_noise", "multiplicative_noise"),
    "brightness": ("brighten", "darken", "mean_shift"),
    "spatial": ("pixelate", "quantization", "non_eccentricity_patch", "color_block"),
    "sharpness/contrast": ("high_sharpen", "contrast_change"),
}


def group_sroccs(metric, size: int = 256, percentiles: dict | None = None) -> dict[tuple[str, str], float]:
    """SROCC(score, −level) of every (photo, type) group of the bundled suite at ``size`` px.
    ``percentiles``: if given, receives the 1st and 99th percentile of the scores (``score_range``)."""
    ds = BundledDataset(size=size)
    scores, truth, groups = [], [], []
    with torch.no_grad():
        for i in range(0, len(ds.items), 10):
            items = ds.items[i:i + 10]
            scores += metric(torch.cat([it.load() for it in items])).tolist()
            truth += [it.truth for it in items]
            groups += [it.group for it in items]
    scores, truth, groups = np.array(scores), np.array(truth), np.array(groups)
    if percentiles is not None:
        percentiles.update(p1=float(np.percentile(scores, 1)), p99=float(np.percentile(scores, 99)))
    out = {}
    for g in dict.fromkeys(groups.tolist()):
        m = groups == g
        r = spearmanr(scores[m], truth[m]).correlation
        out[tuple(g.split("/"))] = 0.0 if np.isnan(r) else float(r)    # constant scores rank nothing
    return out


def summarise(rs: dict[tuple[str, str], float]) -> dict[str, float]:
    def mean(pred) -> float:
        v = [r for (c, t), r in rs.items() if pred(c, t)]
        return float(np.mean(v)) if v else float("nan")

    out = {"overall": mean(lambda c, t: True),
           "seen types": mean(lambda c, t: t not in HELD_OUT_TYPES),
           "unseen types": mean(lambda c, t: t in HELD_OUT_TYPES)}
    for fam, types in FAMILIES.items():
        out[f"family {fam}"] = mean(lambda c, t, types=types: t in types)
    for t in sorted({t for _, t in rs}):
        out[f"type {t}"] = mean(lambda c, tt, t=t: tt == t)
    for c in dict.fromkeys(c for c, _ in rs):
        out[f"photo {c}"] = mean(lambda cc, t, c=c: cc == c)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", default="iqg-cnn,iqg-resnet")
    ap.add_argument("--weights-dir", default=None, help="folder with <name>.safetensors (default: shipped)")
    ap.add_argument("--json", default=None, help="also write the summaries here")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    res = {}
    for name in [n.strip() for n in a.names.split(",") if n.strip()]:
        w = str(Path(a.weights_dir) / f"{name}.safetensors") if a.weights_dir else ""
        pct: dict = {}
        res[name] = summarise(group_sroccs(METRICS.create(name, weights=w), percentiles=pct))
        res[name].update({"score p1": pct["p1"], "score p99": pct["p99"]})
    names = list(res)
    print("| | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for k in res[names[0]]:
        print(f"| {k} | " + " | ".join(f"{res[n][k]:.4f}" if k.startswith("score") else f"{res[n][k]:.3f}"
                                       for n in names) + " |")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
