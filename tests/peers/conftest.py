"""Cross-checks against peer implementations that live in a second virtualenv (`make peers`).

The peer venv (`.venv-peers`: torch 2.14.1 + torchvision 0.29.1 + pyiqa, piq, lpips, DISTS_pytorch,
brisque, torchattacks) is kept apart so the core venv stays free of torchvision and pyiqa. A test
computes our value in-process and the peer's value by running a short script in the peer venv,
exchanging arrays through an .npz file.

When the peer venv is missing the tests skip — unless IQAGUARD_REQUIRE_PEERS=1 (set by `make test`),
where a missing peer venv is an error, so CI never silently skips a calibration.
"""
from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = Path(os.environ.get("IQAGUARD_PEER_PYTHON", ROOT / ".venv-peers" / "bin" / "python"))


class Peer:
    def __init__(self, python: Path, tmp: Path):
        self.python = python
        self.tmp = tmp
        self._n = 0

    def run(self, script: str, inputs: dict[str, np.ndarray] | None = None, timeout: int = 600) -> dict[str, np.ndarray]:
        """Run ``script`` in the peer venv. It sees ``inputs`` (dict of arrays) and must fill ``outputs``."""
        self._n += 1
        inp = self.tmp / f"in{self._n}.npz"
        out = self.tmp / f"out{self._n}.npz"
        np.savez(inp, **(inputs or {}))
        code = (
            "import numpy as np\n"
            f"inputs = dict(np.load({str(inp)!r}))\n"
            "outputs = {}\n"
            + textwrap.dedent(script)
            + f"\nnp.savez({str(out)!r}, **{{k: np.asarray(v) for k, v in outputs.items()}})\n"
        )
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="2")
        r = subprocess.run([str(self.python), "-c", code], capture_output=True, text=True, timeout=timeout,
                           env=env, cwd=str(self.tmp))
        if r.returncode != 0:
            raise RuntimeError(f"peer script failed:\n{r.stderr[-4000:]}")
        return dict(np.load(out))


@pytest.fixture(scope="session")
def peer(tmp_path_factory):
    if not PEER_PYTHON.exists():
        msg = f"peer venv not found at {PEER_PYTHON} (run `make peers`)"
        if os.environ.get("IQAGUARD_REQUIRE_PEERS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return Peer(PEER_PYTHON, tmp_path_factory.mktemp("peer"))
