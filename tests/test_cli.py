"""The command line: one-line errors, listing, scoring, and a small end-to-end run."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from .conftest import assert_one_line_error, cli




@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("img")
    arr = (rng.random((200, 200, 3)) * 40 + np.linspace(0, 200, 200)[None, :, None]).astype(np.uint8)
    Image.fromarray(arr).save(d / "a.png")
    Image.fromarray(np.clip(arr.astype(int) + 8, 0, 255).astype(np.uint8)).save(d / "b.png")
    return d


def test_list():
    r = cli("list", "defenses")
    assert r.returncode == 0 and "jpeg" in r.stdout and "quality=50" in r.stdout
    r = cli("list")
    assert r.returncode == 0 and "metrics:" in r.stdout and "niqe" in r.stdout


def test_score(photo):
    r = cli("score", "-m", "psnr", str(photo / "b.png"), "--ref", str(photo / "a.png"))
    assert r.returncode == 0, r.stderr
    assert float(r.stdout.split()[0]) > 20
    r = cli("score", "-m", "niqe", str(photo / "a.png"))
    assert r.returncode == 0, r.stderr and "lower is better" in r.stdout


def test_errors_are_one_line(photo):
    assert_one_line_error(cli("score", "-m", "niqe", str(photo / "missing.png")), "missing.png", "does not exist")
    assert_one_line_error(cli("score", "-m", "nqe", str(photo / "a.png")), "unknown metric 'nqe'", "niqe")
    assert_one_line_error(cli("score", "-m", "psnr", str(photo / "a.png")), "--ref")
    assert_one_line_error(cli("run", "-d", "jpeg:quality", "--limit", "1"), "unknown defense")
    assert_one_line_error(cli("run", "-d", "jpeg:q=1,q=2"), "malformed spec")
    assert_one_line_error(cli("run", "-a", "nope"), "unknown attack 'nope'")
    assert_one_line_error(cli("run", "--data", "bundled:size=abc"), "size")
    assert_one_line_error(cli("run", "--device", "cuda:7") if not _cuda() else cli("run", "--device", "bogus"), "device")


def _cuda():
    import torch
    return torch.cuda.is_available()


def test_run_end_to_end(tmp_path):
    args = ["run", "-m", "niqe", "-a", "ifgsm:steps=2", "-d", "no-defense", "-d", "jpeg:quality=50",
            "--data", "bundled:size=192", "--limit", "3", "--out", str(tmp_path / "out"), "--no-progress"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    assert "6 computed, 0 reused" in r.stdout
    out = tmp_path / "out"
    for f in ("iqaguard.db", "results.csv", "summary.csv", "index.html"):
        assert (out / f).exists(), f
    assert len(pd.read_csv(out / "results.csv")) == 6
    r2 = cli(*args)
    assert r2.returncode == 0 and "0 computed, 6 reused" in r2.stdout
    r3 = cli("report", "--store", str(out / "iqaguard.db"), "--out", str(tmp_path / "rep"))
    assert r3.returncode == 0, r3.stderr
    assert (tmp_path / "rep" / "index.html").exists()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "rep" / "summary.csv"), pd.read_csv(out / "summary.csv"))


def test_run_adaptive(tmp_path):
    """``--adaptive LIST`` adds the adaptive column for those defenses and records the wrapper."""
    out = tmp_path / "out"
    args = ["run", "-m", "iqg-cnn", "-a", "fgsm:eps=2/255", "-d", "no-defense", "-d", "jpeg:quality=50",
            "-d", "random-noise", "--adaptive", "jpeg:quality=50,random-noise", "--eot-k", "2",
            "--data", "bundled:size=64", "--limit", "2", "--out", str(out), "--no-progress"]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    rows = pd.read_csv(out / "results.csv")
    # no-defense: the transfer attack already attacked exactly the undefended metric ("direct")
    assert set(rows.adaptive_wrapper.dropna()) == {"bpda", "eot2", "direct"}
    assert rows.defended_attacked_adaptive.notna().sum() == 6
    assert (out / "flags.csv").exists()
    assert_one_line_error(cli("run", "-d", "jpeg", "--adaptive", "median-blur", "--limit", "1"), "not among")
    # the report rebuilt from the store keeps the adaptive column and the flags
    r3 = cli("report", "--store", str(out / "iqaguard.db"), "--out", str(tmp_path / "rep"))
    assert r3.returncode == 0, r3.stderr
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "rep" / "flags.csv"), pd.read_csv(out / "flags.csv"))


def test_report_chooses_a_run(tmp_path):
    """A store holding two runs: ``report --run ID`` reports the chosen one (default: the last)."""
    import sqlite3

    out = tmp_path / "out"
    base = ["run", "-m", "iqg-cnn", "-d", "jpeg", "--data", "bundled:size=64", "--limit", "1", "--no-adaptive",
            "--out", str(out), "--no-progress"]
    assert cli(*base, "-a", "fgsm:eps=2/255").returncode == 0
    assert cli(*base, "-a", "fgsm:eps=4/255").returncode == 0
    with sqlite3.connect(out / "iqaguard.db") as db:
        first, last = [r[0] for r in db.execute("SELECT run_id FROM runs ORDER BY started")]
    for run, eps in ((first, "0.00784"), (last, "0.0156"), (None, "0.0156")):
        rep = tmp_path / f"rep-{run}"
        r = cli("report", "--store", str(out / "iqaguard.db"), "--out", str(rep), *(["--run", run] if run else []))
        assert r.returncode == 0, r.stderr
        attacks = set(pd.read_csv(rep / "summary.csv").attack)
        assert len(attacks) == 1 and eps in attacks.pop()
    assert_one_line_error(cli("report", "--store", str(out / "iqaguard.db"), "--run", "nope"), "nope")
    listed = cli("report", "--store", str(out / "iqaguard.db"), "--list-runs")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert [ln.split()[0] for ln in lines] == [first, last] and "finished" in lines[0]
    assert "1 metrics × 1 attacks × 1 defenses × 1 images" in lines[0]
