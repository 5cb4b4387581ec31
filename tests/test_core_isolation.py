"""The core venv stays free of torchvision and pyiqa; pyiqa is reached only through the bridge's lazy import.

Peers (pyiqa, torchvision, piq, …) live in `.venv-peers` (`make peers`); see tests/peers/.
"""
import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "iqaguard"
PEER_ONLY = ("pyiqa", "torchvision", "piq", "lpips", "DISTS_pytorch", "torchattacks", "brisque")


def test_core_venv_has_no_torchvision():
    assert importlib.util.find_spec("torchvision") is None


def _top_level_imports(tree):
    """Imports executed at module import time (not inside a function or class body)."""
    for node in tree.body:
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


def test_no_core_module_imports_peer_packages_at_import_time():
    offenders = []
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for mod in _top_level_imports(tree):
            if mod.split(".")[0] in PEER_ONLY:
                offenders.append(f"{path.relative_to(SRC)}: import {mod}")
        if path.name != "pyiqa_bridge.py":    # the bridge imports pyiqa lazily, inside a function
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                offenders += [f"{path.relative_to(SRC)}: import {n}" for n in names if n.split(".")[0] == "pyiqa"]
    assert not offenders, offenders


def test_importing_iqaguard_loads_no_peer_package():
    code = ("import sys, iqaguard, iqaguard.metrics, iqaguard.cli; "
            f"print([m for m in {PEER_ONLY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.skipif(importlib.util.find_spec("pyiqa") is not None, reason="pyiqa installed here")
def test_pyiqa_metric_without_pyiqa_names_the_extra():
    from iqaguard import create_metric
    from iqaguard.errors import InputError
    import iqaguard

    with pytest.raises(InputError, match=r"pip install iqaguard\[pyiqa\]"):
        create_metric("pyiqa:maniqa")
    assert not [n for n in iqaguard.list_metrics() if n.startswith("pyiqa:")]
