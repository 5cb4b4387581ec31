"""Measure the adversarial-training defenses: white-box PGD gain and clean SROCC, before/after.

Usage: python scripts/measure_trained_defenses.py METRIC DEFENSE_SPEC [DEFENSE_SPEC ...]
Protocol (the one of tests/defenses/test_training_effect.py): bundled suite at 128 px; evaluated
= first 120 items (24 groups × 5 levels); training = 32 other items spread evenly
(evaluation.plan.train_split); gain = mean over the first 8 evaluated images of
s·(score(PGD(x)) − score(x))/range with PGD ℓ∞ 4/255, 10 steps, seed 0 on the (fine-tuned) metric;
SROCC = mean within-group Spearman ρ against −level. One thread.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr

import iqaguard as ig
from iqaguard.evaluation.plan import train_split

EVAL_N, GAIN_N, TRAIN_N, SIZE = 120, 8, 32, 128


def srocc(metric, x, truth, groups):
    with torch.no_grad():
        s = torch.cat([metric(x[i:i + 30]) for i in range(0, len(x), 30)]).numpy()
    rhos = [spearmanr(s[idx], truth[idx]).correlation
            for g in sorted(set(groups)) for idx in [[i for i, gg in enumerate(groups) if gg == g]]]
    return float(np.mean([r for r in rhos if np.isfinite(r)])), s


def pgd_gain(metric, x):
    x_adv = ig.create_attack("pgd", eps=4 / 255, seed=0)(metric, x)
    with torch.no_grad():
        sign = -1.0 if metric.lower_better else 1.0
        return float((sign * (metric(x_adv) - metric(x)) / metric.range_width).mean())


def main(argv):
    torch.set_num_threads(1)
    metric_name, specs = argv[0], argv[1:]
    ds = ig.create_dataset("bundled", size=SIZE)
    ev = ds.items[:EVAL_N]
    tr = train_split(ds, [it.id for it in ev], TRAIN_N)
    x_eval, x_train = torch.cat([it.load() for it in ev]), torch.cat([it.load() for it in tr])
    truth, groups = np.array([it.truth for it in ev]), [it.group for it in ev]
    metric = ig.create_metric(metric_name)
    r0, s0 = srocc(metric, x_eval, truth, groups)
    g0 = pgd_gain(metric, x_eval[:GAIN_N])
    print(f"{metric_name} undefended: gain {g0:.4f} srocc {r0:.4f}", flush=True)
    for spec in specs:
        d = ig.create_defense(spec)
        t = time.perf_counter()
        d.fit(metric, x_train)
        dt = time.perf_counter() - t
        p = d.protect(metric)
        r1, s1 = srocc(p, x_eval, truth, groups)
        g1 = pgd_gain(p, x_eval[:GAIN_N])
        shift = np.abs(s1 - s0).mean() / metric.range_width
        print(f"{metric_name} {spec}: fit {dt:.1f}s ({d.fit_stats.grad_calls} gradient calls) gain {g1:.4f} "
              f"(x{g1 / g0:.2f}) srocc {r1:.4f} ({r1 - r0:+.4f}) mean |clean score change|/range {shift:.4f}",
              flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
