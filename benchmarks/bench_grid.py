"""The whole grid against its floor, attack reuse, and the peak memory of ``make run``.

1. **Whole-grid overhead.** The default suite (``iqaguard run`` with no flags, what ``make run``
   runs: ``iqaguard.evaluation.plan.QUICK``) runs in a child process from an empty ``--out``; its
   wall and CPU time (children's rusage) are divided by the floor: the same grid's unavoidable
   passes, computed here directly with the library's public API and nothing else, one image at a
   time as the engine computes (per-image results must not depend on the batch): per metric and
   image the clean score; per attack the transfer attack and the attacked score; per defense the
   purified clean and attacked images and their scores, the adaptive attack (the wrapper ``auto``
   picks: direct, BPDA or EOT-k) and its defended score; and the quality columns (RGB SSIM/PSNR
   and the luma PSNR/SSIM/MS-SSIM of each processed image). What the run adds on top is the
   engine: planning, keys and the store, PNG writes and reads, the honesty probes, CSVs and the
   HTML report. Target ≤ 1.3 (floor 1.0).
2. **Attack reuse.** A grid with 1, 3 and 6 purifiers (adaptive column off, then on) counts the
   attack calls the engine makes: the transfer column must cost the same attack calls whatever the
   number of defenses; the adaptive column adds one per defense that is not the identity.
3. **Memory.** Peak RSS of the child ``iqaguard run`` (``ru_maxrss`` of the children). Target < 3 GB.

Cost: the default suite computes every adaptive column (issue 10), about 4 CPU-minutes per image on
this 2-core machine, and the floor costs as much again; ``make bench`` therefore runs the suite's
methods on its first ``--limit 4`` images (the ratio is per image; the run's fixed costs — start-up,
planning, probes, report — weigh more on fewer images, so a smaller limit overstates the overhead).
Both sides run with ``--threads`` torch threads (default 1: on a loaded machine OpenMP threads spin
on oversubscribed cores and inflate both clocks); CPU time is the robust ratio, wall is printed too.

Run: ``python benchmarks/bench_grid.py [--limit 16 --threads 2]`` (16: the full default suite).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import iqaguard as ig
from iqaguard.errors import InputError
from iqaguard.adaptive import adaptive
from iqaguard.attacks import base as attack_base
from iqaguard.evaluation.plan import QUICK
from iqaguard.evaluation.quality import psnr_rgb, ssim_rgb
from iqaguard.evaluation.rows import LUMA_QUALITY
from iqaguard.registry import ATTACKS, DATASETS, DEFENSES, METRICS
from iqaguard.seeds import derive_seed

BIN = Path(sys.executable).parent


def run_default(limit: int, out: str, threads: int) -> dict:
    """``iqaguard run`` at its defaults in a child process: wall, CPU and peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([str(BIN / "iqaguard"), "run", "--limit", str(limit), "--out", out, "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": after.ru_maxrss / 1024}


def quality(x: torch.Tensor, y: torch.Tensor, luma: dict, target: str) -> None:
    if y.shape[-2:] != x.shape[-2:]:
        y = torch.nn.functional.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
    with torch.no_grad():
        ssim_rgb(y, x), psnr_rgb(y, x)
        for name, q in luma.items():
            if name != target:
                try:
                    q(y, x)
                except InputError:   # as the engine: MS-SSIM on images smaller than its five scales
                    pass


def floor(limit: int) -> dict:
    """The default grid's unavoidable passes, one image at a time (see the module docstring)."""
    items = DATASETS.create(QUICK["dataset"]).subset(limit).items
    luma = {q: METRICS.create(spec).eval() for q, spec in LUMA_QUALITY.items()}
    defenses = {d: DEFENSES.create(d) for d in QUICK["defenses"]}
    t, c = time.perf_counter(), time.process_time()
    for m_spec in QUICK["metrics"]:
        metric = METRICS.create(m_spec).eval()
        targets = {d: adaptive(dd, metric, "auto", k=QUICK["eot_k"]) for d, dd in defenses.items()}
        for item in items:
            x = item.load()
            with torch.no_grad():
                metric(x)
            seeds = {d: [derive_seed(0, m_spec, d, item.id)] for d in defenses}
            dc = {}
            for d, defense in defenses.items():
                with torch.no_grad():
                    dc[d] = defense.purify(x, seeds[d])
                    metric(dc[d])
                quality(x, dc[d], luma, m_spec)
            for a_spec in QUICK["attacks"]:
                attack = ATTACKS.create(a_spec)
                x_adv = attack.quantize(attack(metric, x), x)
                with torch.no_grad():
                    metric(x_adv)
                quality(x, x_adv, luma, m_spec)
                for d, defense in defenses.items():
                    with torch.no_grad():
                        y = defense.purify(x_adv, seeds[d])
                        metric(y)
                    quality(x, y, luma, m_spec)
                    if d == "no-defense":
                        continue
                    x_ad = attack.quantize(attack(targets[d], x), x)
                    with torch.no_grad():
                        metric(defense.purify(x_ad, seeds[d]))
    return {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}


def attack_calls(defenses: list[str], adaptive_column: bool) -> int:
    """Attack calls the engine makes for a small grid (counted at ``Attack.__call__``)."""
    calls = [0]
    original = attack_base.Attack.__call__

    def counting(self, *a, **k):
        calls[0] += 1
        return original(self, *a, **k)

    attack_base.Attack.__call__ = counting
    try:
        with tempfile.TemporaryDirectory() as out:
            ig.benchmark(metrics=["iqg-cnn"], attacks=["ifgsm:steps=2"], defenses=defenses,
                         dataset="bundled:size=64", limit=4, adaptive=adaptive_column, out=out, report=False)
    finally:
        attack_base.Attack.__call__ = original
    return calls[0]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=4, help="images of the default suite (its own: 16)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"default suite: {len(QUICK['metrics'])} metrics × {len(QUICK['attacks'])} attacks × "
          f"{len(QUICK['defenses'])} defenses × {args.limit} images, adaptive EOT-{QUICK['eot_k']}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; load {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as out:
        run = run_default(args.limit, out, args.threads)
    print(f"iqaguard run done: wall {run['wall_s']:.1f} s", flush=True)
    fl = floor(args.limit)
    over_wall, over_cpu = run["wall_s"] / fl["wall_s"], run["cpu_s"] / fl["cpu_s"]
    print(f"iqaguard run   wall {run['wall_s']:7.1f} s   cpu {run['cpu_s']:7.1f} s   peak RSS {run['peak_rss_mb']:.0f} MB")
    print(f"floor          wall {fl['wall_s']:7.1f} s   cpu {fl['cpu_s']:7.1f} s")
    print(f"whole-grid overhead: wall x{over_wall:.2f}, cpu x{over_cpu:.2f} (target <= 1.3)")
    sets = {1: ["no-defense"], 3: ["no-defense", "jpeg", "gaussian-blur"],
            6: ["no-defense", "jpeg", "gaussian-blur", "median-blur", "random-noise", "upscale"]}
    reuse = []
    for n, ds in sets.items():
        transfer, both = attack_calls(ds, False), attack_calls(ds, True)
        reuse.append({"defenses": n, "transfer_attack_calls": transfer, "with_adaptive_calls": both,
                      "expected_adaptive": transfer * (n - 1)})
        print(f"{n} defense(s): transfer attack calls {transfer}, with the adaptive column {both} "
              f"(adaptive part {both - transfer}, expected {transfer * (n - 1)})")
    reused = len({r["transfer_attack_calls"] for r in reuse}) == 1
    print(f"attack reuse: transfer calls independent of the number of defenses: {reused}")
    return {"name": "grid", "setup": {"limit": args.limit, "suite": QUICK, "threads": torch.get_num_threads(),
                                      "torch": torch.__version__},
            "run": run, "floor": fl, "overhead_wall": over_wall, "overhead_cpu": over_cpu,
            "overhead_target": "<=1.3", "overhead_target_met": over_cpu <= 1.3,
            "reuse": reuse, "reuse_ok": reused,
            "peak_rss_mb": run["peak_rss_mb"], "rss_target": "<3072 MB", "rss_target_met": run["peak_rss_mb"] < 3072}


if __name__ == "__main__":
    main()
