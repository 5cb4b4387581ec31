"""``make bench``: run every benchmark here, write ``benchmarks/results/latest.json`` and README's table.

Each ``bench_*.py`` exposes ``main(argv) -> dict`` and prints its own table; this collects the
dicts with the provenance of the run (git SHA, versions, threads, load average, date) and rewrites
the block between ``<!-- bench:start -->`` and ``<!-- bench:end -->`` in README.md.

Run: ``python benchmarks/run_all.py [--only metrics,grid] [--no-readme]``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# per benchmark: the arguments make bench uses. One torch thread for the timed ratios: on a machine
# shared with other jobs a 2-thread op waits for its second thread to be scheduled, which times
# the scheduler rather than the work (bench_metrics' docstring). The certified soundness run in
# full (20 images, NIQE) is over an hour: make bench runs 4 images of the learned metrics.
ARGS = {"metrics": ["--threads", "1"], "attacks": ["--threads", "1"],
        "certified": ["--images", "4", "--metrics", "iqg-cnn:64,iqg-resnet:64"]}
ORDER = ["metrics", "attacks", "grid", "dask", "defenses", "certified"]


def provenance() -> dict:
    import torch

    import iqaguard

    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "git_sha": sha or None,
            "iqaguard": iqaguard.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg())}


def fmt(v, spec=".2f") -> str:
    return "–" if v is None else format(v, spec)


def readme_table(results: dict) -> str:
    """The markdown block README shows: one line per measured figure, with its target."""
    out = [f"Measured by `make bench` on {results['provenance']['date'][:10]} ({results['provenance']['cpus']} cores, "
           f"torch {results['provenance']['torch']}, git {str(results['provenance']['git_sha'])[:7]}); "
           f"all numbers in `benchmarks/results/latest.json`.", ""]
    m = results.get("metrics")
    if m:
        out += ["| metric | peer | pass | ours ms | peer ms | speed-up | values equal | target |", "|---|---|---|---|---|---|---|---|"]
        for r in m["rows"]:
            out.append(f"| {r['metric']} | {r.get('peer') or '–'} | {r['pass']} | {fmt(r.get('ours_ms'), '.1f')} | "
                       f"{fmt(r.get('peer_ms'), '.1f')} | {fmt(r.get('speedup'))} | "
                       f"{'–' if r.get('values_equal') is None else ('yes' if r['values_equal'] else 'NO')} | "
                       f"{r.get('target') or '–'} {'' if r.get('target_met') is None else ('✓' if r['target_met'] else '✗')} |")
        out.append("")
    a = results.get("attacks")
    if a:
        out += ["| attack iteration ÷ metric forward+backward (CPU time) | metric | ratio | floor | target |",
                "|---|---|---|---|---|"]
        for r in a["rows"]:
            if r["kind"] in ("gradient", "adaptive"):
                floor = r.get("floor_cpu", 1.0)
                met = r.get("target_met")
                out.append(f"| {r['attack']} | {r['metric']} | {fmt(r['ratio_cpu'])} | {fmt(floor)} | "
                           f"≤ 1.2 × floor {'✓' if met else '✗'} |")
        out.append("")
    g = results.get("grid")
    if g:
        out += ["| whole grid (default suite) | value | target |", "|---|---|---|",
                f"| `iqaguard run` ÷ its unavoidable passes (CPU time) | ×{g['overhead_cpu']:.2f} (wall ×{g['overhead_wall']:.2f}) | "
                f"≤ 1.3 {'✓' if g['overhead_target_met'] else '✗'} |",
                f"| peak RSS of `iqaguard run` | {g['peak_rss_mb']:.0f} MB | < 3 GB {'✓' if g['rss_target_met'] else '✗'} |",
                "| transfer attack calls with 1 / 3 / 6 defenses | "
                + " / ".join(str(r["transfer_attack_calls"]) for r in g["reuse"])
                + f" | equal {'✓' if g['reuse_ok'] else '✗'} |"]
    d = results.get("dask")
    if d:
        out.append(f"| Dask, 2 workers ÷ 1 worker (throughput) | ×{d['speedup_2_vs_1']:.2f} | "
                   f"≥ 1.7 {'✓' if d['target_met'] else '✗'} |")
    return "\n".join(out)


def write_readme(table: str) -> None:
    path = ROOT / "README.md"
    text = path.read_text()
    start, end = "<!-- bench:start -->", "<!-- bench:end -->"
    if start not in text or end not in text:
        print("README.md has no bench markers; table not written", file=sys.stderr)
        return
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{table}\n{end}{tail}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default=",".join(ORDER), help="comma-separated benchmarks (default: all)")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite README's table")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    out = HERE / "results" / "latest.json"
    names = args.only.split(",")
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        sys.exit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(ORDER)}")
    # a partial run (--only) updates its benchmarks in the last results and keeps the others
    results = json.loads(out.read_text()) if set(names) != set(ORDER) and out.exists() else {}
    results["provenance"] = provenance()
    for name in names:
        print(f"== bench_{name}.py {' '.join(ARGS.get(name, []))}", flush=True)
        prov = provenance()
        results[name] = importlib.import_module(f"bench_{name}").main(ARGS.get(name, []))
        results[name]["provenance"] = {**prov, "load_average_after": list(os.getloadavg())}
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str))
    os.replace(tmp, out)
    print(f"wrote {out.relative_to(ROOT)}")
    if not args.no_readme:
        write_readme(readme_table(results))
        print("updated README.md (bench table)")


if __name__ == "__main__":   # required: Dask's spawned workers re-import the main module
    main()
