"""Files written by iqaguard are written atomically (issue 16): temporary file + ``os.replace``."""
from __future__ import annotations

import ast
import os
import stat
from pathlib import Path

import pytest
import torch

import iqaguard
from iqaguard.atomic import replacing, write_text
from iqaguard.images import save_png

SRC = Path(iqaguard.__file__).parent


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text("old\n")
    with pytest.raises(RuntimeError):
        with replacing(p) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("disk full")
    assert p.read_text() == "old\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["results.csv"]


def test_write_text_replaces_and_keeps_the_usual_mode(tmp_path):
    p = write_text(tmp_path / "sub" / "t.json", "{}\n")
    assert p.read_text() == "{}\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask     # not mkstemp's 0600
    assert sorted(x.name for x in p.parent.iterdir()) == ["t.json"]


def test_save_png_leaves_no_temp(tmp_path):
    save_png(torch.zeros(1, 3, 4, 4), tmp_path / "a.png")
    save_png(torch.ones(1, 3, 4, 4), tmp_path / "a.png")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.png"]


# --- every writer in the package writes to a temporary file -------------------------------

WRITERS = {"write_text", "write_bytes", "to_csv", "to_json", "to_parquet", "save_file", "save", "savez",
           "dump"}
#: Writers into something other than a final path: in-memory buffers, the temporary file itself.
TEMP_NAMES = {"tmp", "buf", "f", "fh"}


def _target(call: ast.Call) -> ast.AST | None:
    """The expression naming where a writer call writes."""
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in ("write_text", "write_bytes"):
        return f.value                                  # path.write_text(...)
    if call.args:
        return call.args[0]                             # df.to_csv(path), img.save(path), save_file(d, path)
    return None


def _name(node: ast.AST | None) -> str:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str" and node.args:
        return _name(node.args[0])                      # str(tmp)
    return node.id if isinstance(node, ast.Name) else ast.unparse(node) if node is not None else ""


def _writes():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "atomic.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name == "open":
                mode = node.args[1] if len(node.args) > 1 else next(
                    (k.value for k in node.keywords if k.arg == "mode"), None)
                if not (isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax")):
                    continue
            elif name not in WRITERS or (isinstance(f, ast.Name) and name != "save_file"):
                continue                                # a plain function (atomic.write_text, a callback)
            if name == "save_file" and len(node.args) > 1:
                target = node.args[1]
            else:
                target = _target(node)
            yield rel, node.lineno, name, _name(target)


def test_every_file_write_goes_through_a_temporary_file():
    offenders = [f"{rel}:{line} {name}({target})" for rel, line, name, target in _writes()
                 if target not in TEMP_NAMES]
    assert not offenders, "write through iqaguard.atomic.replacing/write_text: " + ", ".join(offenders)


def test_the_scan_sees_writers():
    """The scan above would notice a direct writer (it finds the ones inside ``replacing``)."""
    found = {(rel, name) for rel, _, name, _ in _writes()}
    assert ("evaluation/outputs.py", "to_csv") in found and ("images.py", "save") in found
    assert ("fitting.py", "save_file") in found
