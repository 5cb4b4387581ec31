"""Shared fixtures: small deterministic 8-bit images and toy metrics."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "2")
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is as fast as two and does not spin-wait on a shared machine.
    Use as ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def images():
    """Two 8-bit RGB images, 2×3×64×64, float32 in [0,1]."""
    g = torch.Generator().manual_seed(0)
    return torch.round(torch.rand(2, 3, 64, 64, generator=g) * 255) / 255


def cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """``iqaguard ARGS`` in a child process (as a user types it), output captured."""
    return subprocess.run([sys.executable, "-m", "iqaguard.cli", *args], capture_output=True, text=True, cwd=cwd)


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    """A refused command: exit 2, one line on stderr holding every fragment, no traceback."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def wait_for_rows(proc: subprocess.Popen, db, where: str = "", n: int = 1, timeout: float = 300) -> int:
    """Poll ``db`` (read-only) until it holds ``n`` rows (``where``: an SQL condition) or ``proc``
    exits; the number seen. For tests that interrupt a run once its first cells are stored."""
    import sqlite3
    import time

    stored, t0 = 0, time.monotonic()
    while proc.poll() is None and stored < n and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
                stored = con.execute(f"SELECT COUNT(*) FROM rows {where}").fetchone()[0]
        except sqlite3.Error:
            pass
    return stored
