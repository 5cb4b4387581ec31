"""Shared timing helper of the benchmark scripts (not a benchmark itself: run_all globs bench_*.py)."""
from __future__ import annotations

import time


def best(fn, repeat: int = 3) -> float:
    """Best of ``repeat`` wall-clock runs after one warm-up call: the least disturbed measurement."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
