"""Provenance of a run: enough to reproduce every number (versions, SHA, device, seed, spec)."""
from __future__ import annotations

import datetime as _dt
import functools
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__


def git_sha() -> str:
    """SHA of the checkout the package runs from (with ``-dirty`` when modified), or 'unknown'."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        if not sha:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def cpu() -> str:
    """The CPU model and the vector level torch dispatches to: float kernels, and so the bundled
    distortions' 8-bit pixels and some metric values, differ between CPUs (docs/leaderboard.md)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}; {torch.backends.cpu.get_cpu_capability()}"


def provenance(seed: int, device: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "iqaguard": __version__,
        "git_sha": git_sha(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": device,
        "cpu": cpu(),
        "threads": torch.get_num_threads(),
        "seed": seed,
        "suite": spec.get("suite", "custom"),
        "spec": spec,
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
