"""The bad-input corpus (issue 16): files, tensors, specs, datasets, stores and CLI paths.

Each case must raise (or, on the command line, print) a one-line InputError that names the
problem. Most cases use the Python API (milliseconds); a handful go through the CLI (about 2 s of
interpreter start-up each) to show the exit code 2, no traceback, and that nothing is created.
More store cases: tests/evaluation/test_store.py (text file, foreign SQLite left byte-identical,
newer schema, directory); parameter bounds of every method: tests/test_limits.py.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iqaguard as ig
from iqaguard import InputError
from iqaguard.evaluation.store import Store
from iqaguard.images import load_image
from iqaguard.weights import load_state, resolve

from .conftest import assert_one_line_error, cli

ROOT = os.geteuid() == 0
needs_permissions = pytest.mark.skipif(ROOT, reason="root ignores file permissions")


def _png(path: Path, size: int = 32) -> Path:
    arr = (np.arange(size * size * 3) % 251).astype(np.uint8).reshape(size, size, 3)
    Image.fromarray(arr).save(path)
    return path


def _one_line(exc: pytest.ExceptionInfo, *fragments: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"


# --- files -----------------------------------------------------------------------------------

def _missing(d):
    return d / "missing.png"


def _directory(d):
    (d / "dir.png").mkdir()
    return d / "dir.png"


def _loop(d):
    os.symlink(d / "loop-b.png", d / "loop-a.png")
    os.symlink(d / "loop-a.png", d / "loop-b.png")
    return d / "loop-a.png"


def _broken_link(d):
    os.symlink(d / "nowhere.png", d / "link.png")
    return d / "link.png"


def _unreadable(d):
    p = _png(d / "secret.png")
    p.chmod(0)
    return p


def _truncated(d):
    p = _png(d / "full.png", 64)
    data = p.read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 2])
    return d / "cut.png"


def _text(d):
    (d / "notes.png").write_text("this is not an image\n" * 20)
    return d / "notes.png"


def _empty(d):
    (d / "empty.png").write_bytes(b"")
    return d / "empty.png"


def _under_a_file(d):
    (d / "plain").write_text("x")
    return d / "plain" / "a.png"


FILE_CASES = [
    pytest.param(_missing, "does not exist", id="missing"),
    pytest.param(_directory, "is a directory", id="directory"),
    pytest.param(_loop, "symlink loop", id="symlink-loop"),
    pytest.param(_broken_link, "broken symlink", id="broken-symlink"),
    pytest.param(_unreadable, "permission denied", id="permission-denied", marks=needs_permissions),
    pytest.param(_truncated, "truncated or corrupt", id="truncated-png"),
    pytest.param(_text, "not a readable image", id="text-named-png"),
    pytest.param(_empty, "empty (0 bytes)", id="empty-file"),
    pytest.param(_under_a_file, "a parent is a file", id="parent-is-a-file"),
]


@pytest.mark.parametrize("make, problem", FILE_CASES)
def test_image_files(tmp_path, make, problem):
    path = make(tmp_path)
    with pytest.raises(InputError) as exc:
        load_image(path)
    _one_line(exc, path.name, problem)


@pytest.mark.parametrize("make, problem", [
    pytest.param(_missing, "does not exist", id="missing"),
    pytest.param(_directory, "is a directory", id="directory"),
    pytest.param(_loop, "symlink loop", id="symlink-loop"),
    pytest.param(_unreadable, "permission denied", id="permission-denied", marks=needs_permissions),
    pytest.param(_text, "refused or unreadable", id="not-a-checkpoint"),
])
def test_weights_files(tmp_path, make, problem):
    """An explicit weights path is used or refused with its problem, never replaced by another copy."""
    path = make(tmp_path)
    with pytest.raises(InputError) as exc:
        resolve("iqg-cnn.safetensors", path=path) if problem != "refused or unreadable" else load_state(path)
    _one_line(exc, path.name, problem)


def test_corrupt_safetensors(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    with pytest.raises(InputError) as exc:
        load_state(p)
    _one_line(exc, "w.safetensors", "not a valid safetensors file")


def test_wrong_sha256_is_refused(tmp_path):
    p = tmp_path / "w.safetensors"
    p.write_bytes(b"not the published file")
    with pytest.raises(InputError) as exc:
        resolve("w.safetensors", path=p, sha256="0" * 64)
    _one_line(exc, "w.safetensors", "wrong SHA-256")


class _Payload:
    """Unpickling this calls ``open(marker, 'w')``: code execution from a weights file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_pickle_with_a_payload_is_refused(tmp_path, suffix):
    marker = tmp_path / "pwned"
    for name, save in (("torch-zip", lambda obj, f: torch.save(obj, f)),
                       ("legacy", lambda obj, f: pickle.dump(obj, open(f, "wb")))):
        path = tmp_path / f"evil-{name}{suffix}"
        save({"weight": torch.zeros(2), "x": _Payload(str(marker))}, path)
        assert not marker.exists()
        with pytest.raises(InputError) as exc:
            load_state(path)
        _one_line(exc, path.name, "safely")
        assert not marker.exists(), "the pickle payload ran"
        # through a method's weights parameter as well
        with pytest.raises(InputError):
            ig.create_metric("iqg-cnn", weights=str(path))
        assert not marker.exists()


# --- tensors ---------------------------------------------------------------------------------

X = torch.full((1, 3, 64, 64), 0.5)


def _nan():
    y = X.clone()
    y[0, 0, 0, 0] = float("nan")
    return y


TENSOR_CASES = [
    pytest.param(lambda: (X * 255).to(torch.uint8), None, "float32", id="uint8"),
    pytest.param(lambda: X.double(), None, "float32", id="float64"),
    pytest.param(lambda: X[0], None, "4-D", id="3-d"),
    pytest.param(_nan, None, "NaN", id="nan"),
    pytest.param(lambda: X.clone().fill_(float("inf")), None, "Inf", id="inf"),
    pytest.param(lambda: X + 1, None, "[0,1]", id="out-of-range"),
    pytest.param(lambda: X[:0], None, "empty", id="empty-batch"),
    pytest.param(lambda: torch.rand(1, 1, 64, 64), None, "3 channels", id="gray"),
    pytest.param(lambda: torch.rand(1, 4, 64, 64), None, "3 channels", id="rgba"),
    pytest.param(lambda: X, lambda: torch.rand(1, 3, 32, 32), "same shape", id="ref-shape-mismatch"),
    pytest.param(lambda: X, "none", "needs ref", id="fr-without-ref"),
]


@pytest.mark.parametrize("make_x, make_ref, problem", TENSOR_CASES)
def test_tensors(make_x, make_ref, problem):
    psnr = ig.create_metric("psnr")
    x = make_x()
    ref = X if make_ref is None else (None if make_ref == "none" else make_ref())
    with pytest.raises(InputError) as exc:
        psnr(x) if ref is None else psnr(x, ref)
    _one_line(exc, problem)


@pytest.mark.parametrize("call, problem", [
    pytest.param(lambda: ig.create_metric("niqe")(torch.rand(1, 3, 16, 16)), "at least", id="too-small-niqe"),
    pytest.param(lambda: ig.create_defense("jpeg").purify(_nan()), "NaN", id="defense-nan"),
    pytest.param(lambda: ig.create_attack("fgsm")(ig.create_metric("psnr"), X + 1, X), "[0,1]", id="attack-range"),
])
def test_tensors_through_methods(call, problem):
    with pytest.raises(InputError) as exc:
        call()
    _one_line(exc, problem)


# --- specs -----------------------------------------------------------------------------------

SPEC_CASES = [
    pytest.param(ig.create_metric, "nqe", "unknown metric 'nqe'", id="unknown-metric"),
    pytest.param(ig.create_attack, "fgsn", "unknown attack 'fgsn'", id="unknown-attack"),
    pytest.param(ig.create_defense, "jpg", "unknown defense 'jpg'", id="unknown-defense"),
    pytest.param(ig.create_defense, "jpeg:qualty=3", "no parameter 'qualty'", id="unknown-param"),
    pytest.param(ig.create_attack, "fgsm:eps=2", "eps must be in [0, 1]", id="eps-above-1"),
    pytest.param(ig.create_attack, "fgsm:eps=-0.1", "eps must be in [0, 1]", id="eps-negative"),
    pytest.param(ig.create_attack, "ifgsm:steps=99999999999999999999", "steps must be an integer in 1..100000",
                 id="steps-huge"),
    pytest.param(ig.create_attack, "square-attack:n_queries=10000000", "n_queries", id="queries-huge"),
    pytest.param(ig.create_attack, "ifgsm:steps=2.5", "steps must be an integer", id="steps-fraction"),
    pytest.param(ig.create_attack, "pgd:norm='l3'", "norm must be", id="bad-choice"),
    pytest.param(ig.create_defense, "jpeg:quality=abc", "quality", id="wrong-type"),
    pytest.param(ig.create_defense, "rs:n=100000000", "n must be an integer in 1..1000000", id="samples-huge"),
    pytest.param(ig.create_attack, "fgsm:eps=", "empty value", id="empty-value"),
    pytest.param(ig.create_attack, "fgsm:=1", "malformed spec", id="empty-key"),
    pytest.param(ig.create_attack, "fgsm:eps=1/0", "division by zero", id="division-by-zero"),
    pytest.param(ig.create_attack, "a:b:c", "malformed spec", id="three-colons"),
    pytest.param(ig.create_attack, "fgsm:eps=1,eps=2", "given twice", id="param-twice"),
    pytest.param(ig.create_attack, "fgsm:eps=(1", "unbalanced", id="unbalanced"),
    pytest.param(ig.create_attack, "   ", "non-empty", id="blank"),
]


@pytest.mark.parametrize("create, spec, problem", SPEC_CASES)
def test_specs(create, spec, problem):
    with pytest.raises(InputError) as exc:
        create(spec)
    _one_line(exc, problem)


# --- datasets --------------------------------------------------------------------------------

def _empty_folder(d):
    (d / "empty").mkdir()
    return f"folder:root='{d / 'empty'}'"


def _no_images(d):
    (d / "docs").mkdir()
    (d / "docs" / "readme.txt").write_text("hello")
    return f"folder:root='{d / 'docs'}'"


def _root_is_a_file(d):
    (d / "file.txt").write_text("x")
    return f"folder:root='{d / 'file.txt'}'"


def _root_loop(d):
    os.symlink(d / "r2", d / "r1")
    os.symlink(d / "r1", d / "r2")
    return f"folder:root='{d / 'r1'}'"


def _root_unlistable(d):
    (d / "locked").mkdir()
    _png(d / "locked" / "a.png")
    (d / "locked").chmod(0)
    return f"folder:root='{d / 'locked'}'"


DATASET_CASES = [
    pytest.param(_empty_folder, "holds no images", id="empty-folder"),
    pytest.param(_no_images, "holds no images", id="folder-of-non-images"),
    pytest.param(_root_is_a_file, "not a folder", id="root-is-a-file"),
    pytest.param(_root_loop, "symlink loop", id="root-symlink-loop"),
    pytest.param(_root_unlistable, "permission denied", id="root-permission-denied", marks=needs_permissions),
    pytest.param(lambda d: "imagenet", "unknown dataset 'imagenet'", id="unknown-dataset"),
    pytest.param(lambda d: f"folder:root='{d / 'nope'}'", "does not exist", id="missing-root"),
]


@pytest.mark.parametrize("make, problem", DATASET_CASES)
def test_datasets(tmp_path, make, problem):
    from iqaguard.registry import DATASETS

    try:
        with pytest.raises(InputError) as exc:
            DATASETS.create(make(tmp_path))
        _one_line(exc, problem)
    finally:
        for p in tmp_path.iterdir():       # let pytest clean up the unlistable folder
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)


# --- stores (more in tests/evaluation/test_store.py) -----------------------------------------

def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_stores(tmp_path):
    cases = []
    missing = tmp_path / "missing.db"
    cases.append((lambda: Store(missing, readonly=True), "does not exist"))
    (tmp_path / "empty.db").write_bytes(b"")
    cases.append((lambda: Store(tmp_path / "empty.db", readonly=True), "empty (0 bytes)"))
    os.symlink(tmp_path / "l2.db", tmp_path / "l1.db")
    os.symlink(tmp_path / "l1.db", tmp_path / "l2.db")
    cases.append((lambda: Store(tmp_path / "l1.db"), "symlink loop"))
    foreign = tmp_path / "foreign.db"
    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE cells (k TEXT)")
    db.commit()
    db.close()
    before = _digest(foreign)
    cases.append((lambda: Store(foreign), "did not create"))
    for make, problem in cases:
        with pytest.raises(InputError) as exc:
            make()
        _one_line(exc, problem)
    assert _digest(foreign) == before
    assert not missing.exists()


@needs_permissions
def test_read_only_store_is_refused_before_sqlite_touches_it(tmp_path):
    p = tmp_path / "s.db"
    with Store(p):
        pass
    p.chmod(0o444)
    before = _digest(p)
    with pytest.raises(InputError) as exc:
        Store(p)
    _one_line(exc, "s.db", "permission denied")
    assert _digest(p) == before


# --- CLI paths: exit code 2, one line, no traceback, nothing created ----------------------



def _listing(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def test_cli_out_is_a_file(tmp_path):
    (tmp_path / "out").write_text("mine")
    r = cli("run", "-m", "niqe", "--limit", "1", "--out", str(tmp_path / "out"), "--no-progress")
    assert_one_line_error(r, "--out", "out", "is a file, not a folder")
    assert (tmp_path / "out").read_text() == "mine" and _listing(tmp_path) == {"out"}


@needs_permissions
def test_cli_out_unwritable(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        r = cli("run", "-m", "niqe", "--limit", "1", "--out", str(locked / "out"), "--no-progress")
        assert_one_line_error(r, "--out", "permission denied")
        assert _listing(tmp_path) == {"locked"}
    finally:
        locked.chmod(0o755)


def test_cli_store_is_a_directory_and_report_on_a_missing_store(tmp_path):
    (tmp_path / "db").mkdir()
    r = cli("run", "-m", "niqe", "--limit", "1", "--store", str(tmp_path / "db"),
            "--out", str(tmp_path / "out"), "--no-progress")
    assert_one_line_error(r, "--store", "is a directory")
    r = cli("report", "--store", str(tmp_path / "none.db"), "--out", str(tmp_path / "rep"))
    assert_one_line_error(r, "none.db", "does not exist")
    assert _listing(tmp_path) == {"db"}


def test_cli_calibrate_budgets_checks_out_before_calibrating(tmp_path):
    """Before the fix the calibration ran for minutes, then failed writing to a folder."""
    r = cli("calibrate-budgets", "--out", str(tmp_path), "--limit", "1")
    assert_one_line_error(r, "--out", "is a directory")
    assert "calibrat" not in r.stdout


def test_cli_bad_parameters_fail_fast(tmp_path):
    r = cli("run", "-m", "niqe", "-a", "ifgsm:steps=99999999999999999999", "--limit", "1",
            "--out", str(tmp_path / "o"), "--no-progress")
    assert_one_line_error(r, "steps must be an integer in 1..100000")
    r = cli("run", "-m", "niqe", "-a", "fgsm:eps=2", "--limit", "1", "--out", str(tmp_path / "o"), "--no-progress")
    assert_one_line_error(r, "eps must be in [0, 1]")


def test_cli_nr_metric_with_ref(tmp_path):
    a = _png(tmp_path / "a.png", 64)
    r = cli("score", "-m", "niqe", str(a), "--ref", str(a))
    assert_one_line_error(r, "no-reference", "--ref")
    r = cli("certify", str(a), "-m", "niqe", "--ref", str(a))
    assert_one_line_error(r, "no-reference", "--ref")
