"""Certified cells: soundness count and cost per image (``make bench``; ``--images``/``--size``).

For each metric (the shipped learned ones and NIQE) and certified defense, runs ℓ2 PGD (radius 0.2,
ℓ2 ≤ 0.25 after 8-bit rounding) transfer and adaptively (EOT through the noise) on bundled images,
certifies radius 0.25 at the study's defaults, and prints: images, violations (attacked smoothed
scores outside their certified interval, among non-abstained images within the radius), abstention
rate, mean interval width / range, adaptive results kept (not the clean image) and the mean
adaptive shift of the smoothed score / range, forward passes and seconds per defended score.

The full soundness run of docs/methods/defenses.md is the default (20 images; NIQE with ``rs``
alone takes over an hour on 2 cores); ``make bench`` runs it on 4 images. ``--workers N`` spreads
the images over N local Dask processes (per-image results do not depend on it); a defense spec with
a path (``ddrs:weights=PATH``) gets a folder name with the slashes replaced.
"""
import argparse
import tempfile
import time
from pathlib import Path

import iqaguard as ig
from iqaguard.evaluation.families.certified import MIN_EOT_K
from iqaguard.leaderboard.entries import slug


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--eot-k", type=int, default=MIN_EOT_K,
                   help=f"noise draws per gradient of the adaptive attack (at least {MIN_EOT_K})")
    p.add_argument("--metrics", default="iqg-cnn:64,iqg-resnet:64,niqe:192", help="metric:size,...")
    p.add_argument("--defenses", default="ms,rs")
    p.add_argument("--out", default="", help="keep each run's store under OUT/<metric>-<size>-<defense> and resume "
                                             "from it (default: a temporary folder per run)")
    p.add_argument("--batch-size", type=int, default=8,
                   help="images per task; the store saves a task's cells when it ends, so smaller batches lose "
                        "less of a stopped run (per-image results do not depend on it)")
    p.add_argument("--workers", type=int, default=None,
                   help="run the tasks on a local Dask cluster of this many processes (extra iqaguard[dask])")
    args = p.parse_args(argv)
    print(f"{'metric':12s} {'defense':8s} {'images':>6s} {'violations':>10s} {'abstain':>8s} {'width/R':>8s} "
          f"{'kept':>4s} {'shift/R':>8s} {'fwd/score':>9s} {'s/score':>8s} {'wall s':>7s}")
    out_rows = []
    for spec in args.metrics.split(","):
        metric, size = spec.split(":")
        for d in args.defenses.split(","):
            t0 = time.perf_counter()
            name = f"{metric}-{size}-{slug(d)}"   # slug: weights=PATH
            name += f"-eot{args.eot_k}" if args.eot_k > MIN_EOT_K else ""
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(args.out) / name if args.out else tmp
                r = ig.benchmark(metrics=[metric], attacks=["pgd:norm=l2,eps=0.2"], defenses=[d],
                                 dataset=f"bundled:size={size}", limit=args.images, cert_eps=0.25, eot_k=args.eot_k,
                                 out=out, report=False, batch_size=args.batch_size,
                                 workers=args.workers)
            rows = r.rows
            ok = (rows.cert_abstained == 0) & (rows.l2_c_a <= 0.25) & (rows.l2_c_ad <= 0.25)
            viol = 0
            for col in ("defended_attacked", "defended_attacked_adaptive"):
                viol += int((ok & ((rows[col] < rows.cert_lo) | (rows[col] > rows.cert_hi))).sum())
            span = rows.range_hi - rows.range_lo
            width = float(((rows.cert_hi - rows.cert_lo) / span)[ok].mean())
            # an adaptive result equal to the clean image (keep-best found no gain) makes its check vacuous
            kept = int((rows.l2_c_ad > 0).sum())
            shift = float(((rows.defended_attacked_adaptive - rows.defended_clear).abs() / span).mean())
            wall = time.perf_counter() - t0
            print(f"{metric:12s} {d:8s} {len(rows):6d} {viol:10d} {1 - ok.mean():8.2f} {width:8.3f} "
                  f"{kept:4d} {shift:8.4f} {rows.defense_forwards.mean():9.0f} {rows.defense_seconds.mean():8.2f} "
                  f"{wall:7.0f}", flush=True)
            out_rows.append({"metric": metric, "size": int(size), "defense": d, "images": len(rows),
                             "violations": viol, "abstained": float(1 - ok.mean()), "width_over_range": width,
                             "adaptive_kept": kept, "adaptive_shift_over_range": shift,
                             "forwards_per_score": float(rows.defense_forwards.mean()),
                             "seconds_per_score": float(rows.defense_seconds.mean()), "wall_s": wall})
    return {"name": "certified", "setup": vars(args), "rows": out_rows}


if __name__ == "__main__":
    main()
