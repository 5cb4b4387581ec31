"""Throughput (cells/s) of a small fixed grid: in-process vs a Dask cluster of 1 and 2 workers.

The grid: iqg-cnn × {I-FGSM, PGD} × {jpeg, gaussian-blur, random-noise} × 16 bundled images at
64 px, adaptive column on (BPDA for jpeg, EOT for random-noise), batch size 4: 96 cells, 8 tasks.
Dask workers are processes with one thread (one torch thread) each. Steady state: the cluster is
started and warmed up (imports, one tiny run) before the timed run, so the rows compare the
executors, not process start-up; the last row is ``workers=2`` end to end, start-up included.
One timed run per row (a run takes tens of seconds); the load average is printed with the numbers,
and the CPU seconds of the driver plus the workers, which a loaded machine disturbs less than the
wall clock.

Run: ``python benchmarks/bench_dask.py`` (needs ``iqaguard[dask]``; ``make bench`` has it).
"""
from __future__ import annotations

import os
import tempfile
import time

import torch

import iqaguard as ig

GRID = dict(metrics=["iqg-cnn"], attacks=["ifgsm:steps=5", "pgd:steps=5"],
            defenses=["jpeg", "gaussian-blur", "random-noise:sigma=0.05"], dataset="bundled:size=64",
            limit=16, seed=0, batch_size=4, report=False)
WARM = dict(GRID, attacks=["ifgsm:steps=1"], defenses=["jpeg"], limit=2)


def timed(root: str, name: str, client=None, **kw) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (this process + the workers') and cells computed of one run."""
    cpu = (lambda: sum(client.run(time.process_time).values())) if client else (lambda: 0.0)
    w0, p0, t = cpu(), time.process_time(), time.perf_counter()
    res = ig.benchmark(**GRID, out=os.path.join(root, name), **kw)
    wall = time.perf_counter() - t
    return wall, time.process_time() - p0 + cpu() - w0, res.computed


def on_cluster(root: str, n: int) -> tuple[float, float, int]:
    from distributed import Client

    from iqaguard.evaluation.dask_executor import local_cluster

    with local_cluster(n) as cluster, Client(cluster) as client:
        client.wait_for_workers(n)
        ig.benchmark(**WARM, out=os.path.join(root, f"warm{n}"), scheduler=cluster.scheduler_address)
        return timed(root, f"dask{n}", client, scheduler=cluster.scheduler_address)


def main(argv: list[str] | None = None) -> dict:
    load0 = list(os.getloadavg())
    print(f"load average before: {' '.join(f'{v:.2f}' for v in load0)}  (cores: {os.cpu_count()})")
    rows = []
    with tempfile.TemporaryDirectory() as root:
        n = torch.get_num_threads()
        ig.benchmark(**WARM, out=os.path.join(root, "warm"))
        torch.set_num_threads(1)
        rows.append(("in-process, 1 torch thread", *timed(root, "local1")))
        torch.set_num_threads(n)
        rows.append(("dask, 1 worker", *on_cluster(root, 1)))
        rows.append(("dask, 2 workers", *on_cluster(root, 2)))
        rows.append((f"in-process, {n} torch threads", *timed(root, "local")))
        rows.append(("dask workers=2, start-up included", *timed(root, "dask2-cold", workers=2)))
    print(f"load average after:  {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"{'executor':36} {'cells':>5} {'wall s':>7} {'cells/s':>8} {'CPU s':>6}")
    for name, wall, cpu, cells in rows:
        cpu_s = f"{cpu:6.1f}" if "start-up" not in name else f"{'-':>6}"
        print(f"{name:36} {cells:5d} {wall:7.1f} {cells / wall:8.2f} {cpu_s}")
    r = {name: (wall, cpu) for name, wall, cpu, _ in rows}
    one, two = r["dask, 1 worker"], r["dask, 2 workers"]
    print(f"2 workers vs 1 worker: ×{one[0] / two[0]:.2f} (wall); CPU of the 2-worker run / 1-worker run: "
          f"{two[1] / one[1]:.2f}; vs in-process at {n} threads: ×{r[f'in-process, {n} torch threads'][0] / two[0]:.2f}")
    print("CPU s: this process plus the workers' (not the start-up row); on a loaded machine the wall-clock "
          "ratio says little, the CPU ratio says what parallel work costs.")
    speedup = one[0] / two[0]
    return {"name": "dask", "setup": {"grid": {k: v for k, v in GRID.items() if k != "report"},
                                      "load_before": load0, "load_after": list(os.getloadavg())},
            "rows": [{"executor": name, "cells": cells, "wall_s": wall, "cpu_s": cpu} for name, wall, cpu, cells in rows],
            "speedup_2_vs_1": speedup, "target": ">=1.7", "target_met": speedup >= 1.7}


if __name__ == "__main__":   # required: Dask's worker processes are spawned and re-import this file
    main()
