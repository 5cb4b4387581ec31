"""Crash safety under fault injection (issue: reliability, "Crash safety").

`iqaguard run` is killed with SIGKILL at 20 seeded random moments (uniform over the first 60 % of
an uninterrupted run's length, so kills land in start-up, attacks, defenses, adaptive attacks and
writes; not over all of it: a resumed run that is faster than the reference, e.g. because the
machine's load dropped, would finish before every kill and leave nothing to test), resumed each
time, then finished. The final store must equal the uninterrupted run's: the
same cells, every value identical, no duplicates, no half-written cell (a `done` cell without its
row or a row without its `done` cell), and every adversarial record's PNG present and byte-identical
to the uninterrupted run's. Then Ctrl-C (SIGINT) exits with a message saying how to resume.
"""
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest

from ..conftest import wait_for_rows

ARGS = ["run", "-m", "iqg-cnn", "-a", "fgsm:eps=2/255", "-a", "pgd:eps=4/255,steps=3", "-d", "jpeg",
        "-d", "random-noise", "--eot-k", "2", "--data", "bundled:size=64", "--limit", "2", "--batch-size", "1",
        "--no-progress"]
NOT_RESULTS = {"run_id", "defense_seconds", "attack_seconds", "fit_seconds"}
TRIALS = 20


def _start(out, args=ARGS):
    # SIGINT back to its default in the child, as in a terminal: a shell that runs this suite in
    # the background (no job control) ignores SIGINT, Python then installs no Ctrl-C handler, and
    # the child would finish with exit 0 instead (seen in a backgrounded CI run).
    return subprocess.Popen([sys.executable, "-m", "iqaguard.cli", *args, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _run(out):
    p = _start(out)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr
    return stdout


def _state(out):
    db = sqlite3.connect(out / "iqaguard.db")
    rows = pd.read_sql_query("SELECT * FROM rows", db)
    cells = pd.read_sql_query("SELECT key, status FROM cells", db)
    adv = pd.read_sql_query("SELECT key, path FROM adversarial", db)
    db.close()
    rows = rows[[c for c in rows.columns if c not in NOT_RESULTS]].sort_values("cell").reset_index(drop=True)
    return rows, cells, adv


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    t0 = time.perf_counter()
    _run(out)
    return out, time.perf_counter() - t0


def test_sigkill_at_random_points_then_resume(reference, tmp_path):
    ref_out, wall = reference
    out = tmp_path / "killed"
    rng = random.Random(0)
    finished_early = 0
    for _ in range(TRIALS):
        p = _start(out)
        try:
            p.wait(timeout=rng.uniform(0.2, 0.6 * wall))
            finished_early += 1                          # the grid completed before this kill
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.wait()
        p.communicate()
    _run(out)
    rows, cells, adv = _state(out)
    ref_rows, ref_cells, ref_adv = _state(ref_out)
    assert finished_early < TRIALS
    assert not rows.cell.duplicated().any() and not cells.key.duplicated().any()
    assert set(cells.key[cells.status == "done"]) == set(rows.cell)         # no half-written cell
    assert (cells.status == "done").all()
    pd.testing.assert_frame_equal(rows, ref_rows, check_exact=True)
    assert set(adv.key) == set(ref_adv.key)
    ref_paths = dict(zip(ref_adv.key, ref_adv.path))
    for key, path in zip(adv.key, adv.path):
        assert (out / path).read_bytes() == (ref_out / ref_paths[key]).read_bytes(), path


def test_ctrl_c_says_how_to_resume(tmp_path):
    """SIGINT once the first cell is stored, in a run long enough (24 images) to be still going."""
    out = tmp_path / "out"
    args = list(ARGS)
    args[args.index("--limit") + 1] = "24"
    p = _start(out, args)
    wait_for_rows(p, out / "iqaguard.db")
    assert p.poll() is None, "the 24-image run finished before its first cell was seen"
    p.send_signal(signal.SIGINT)
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 130 and "Traceback" not in stderr
    assert "rerun to continue" in stderr
    with sqlite3.connect(out / "iqaguard.db") as db:
        assert db.execute("SELECT status FROM runs").fetchall() == [("interrupted",)]
