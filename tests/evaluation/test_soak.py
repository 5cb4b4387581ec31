"""Soak: the quick suite's grid three times in a row in one process, memory does not grow (issue:
reliability, "Soak").

The quick suite's metrics, attacks, defenses and adaptive settings (``plan.QUICK``) on 1 image
instead of 16 (the full suite takes ~5 min on 2 cores; three of them would not fit CI), each run in
a fresh output folder so all of it is computed again. Resident memory after the third run may
exceed that after the first by at most 150 MB (a leak of the worker's caches or models, which are
tens to hundreds of MB each, would exceed it; allocator noise on this grid is a few tens of MB).
"""
import gc

import pytest

import iqaguard as ig
from iqaguard.evaluation.plan import QUICK

BOUND_MB = 150


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    pytest.skip("no /proc/self/status")


@pytest.mark.slow
def test_three_quick_runs_do_not_grow_memory(tmp_path):
    rss = []
    for i in range(3):
        res = ig.benchmark(metrics=QUICK["metrics"], attacks=QUICK["attacks"], defenses=QUICK["defenses"],
                           dataset=QUICK["dataset"], limit=1, eot_k=QUICK["eot_k"], out=tmp_path / f"run{i}",
                           report=True)
        assert res.errors == 0 and res.computed == 2 * 2 * len(QUICK["defenses"])
        del res
        gc.collect()
        rss.append(_rss_mb())
    assert rss[2] - rss[0] < BOUND_MB, rss
