"""``make bench``'s collector: the README table is rendered from the results JSON, between markers.

The benchmarks themselves are timed (never in unit tests); this checks the plumbing that turns
their dicts into README's table, and that README keeps the markers it writes between.
"""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_all():
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "benchmarks" / "run_all.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_has_the_bench_markers():
    text = (ROOT / "README.md").read_text()
    assert text.index("<!-- bench:start -->") < text.index("<!-- bench:end -->")


def test_table_shows_each_target_and_whether_it_holds():
    results = {
        "provenance": {"date": "2026-11-30T00:00:00+00:00", "cpus": 2, "torch": "2.13.0", "git_sha": "abc1234def"},
        "metrics": {"rows": [{"metric": "ssim", "peer": "pyiqa", "pass": "forward+backward", "ours_ms": 10.0,
                              "peer_ms": 150.0, "speedup": 15.0, "values_equal": True, "target": ">=10", "target_met": True},
                             {"metric": "lpips", "peer": "piq", "pass": "forward", "ours_ms": 20.0, "peer_ms": 10.0,
                              "speedup": 0.5, "values_equal": False, "target": ">=1.0", "target_met": False}]},
        "attacks": {"rows": [{"kind": "gradient", "attack": "pgd", "metric": "niqe", "ratio_cpu": 1.1, "target_met": True},
                             {"kind": "attack-side", "attack": "pgd", "metric": "energy", "ms_per_iter": 1.0}]},
        "grid": {"overhead_cpu": 1.5, "overhead_wall": 1.6, "overhead_target_met": False, "peak_rss_mb": 900,
                 "rss_target_met": True, "reuse": [{"transfer_attack_calls": 4}] * 3, "reuse_ok": True},
        "dask": {"speedup_2_vs_1": 1.2, "target_met": False},
    }
    table = _run_all().readme_table(results)
    assert "| ssim | pyiqa | forward+backward | 10.0 | 150.0 | 15.00 | yes | >=10 ✓ |" in table
    assert "| lpips | piq | forward | 20.0 | 10.0 | 0.50 | NO | >=1.0 ✗ |" in table
    assert "| pgd | niqe | 1.10 | 1.00 | ≤ 1.2 × floor ✓ |" in table
    assert "energy" not in table                       # attack-side rows are not targets
    assert "×1.50" in table and "≤ 1.3 ✗" in table and "900 MB" in table and "4 / 4 / 4" in table
    assert "×1.20" in table and "≥ 1.7 ✗" in table
