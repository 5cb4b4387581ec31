"""The learned metrics' training script (scripts/train_learned_metrics.py) never reads the bundled
evaluation photos: its sources are other files, and building its data set touches none of them.

Only the data-building step runs here (on a reduced number of images); training itself is not run.
"""
from __future__ import annotations

import ast
import builtins
import hashlib
import importlib.util
import os
from pathlib import Path

import PIL.Image
import pytest
import torch

from iqaguard.data import bundled

pytestmark = pytest.mark.usefixtures("one_thread")

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_learned_metrics.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_learned_metrics_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _forbidden() -> set[Path]:
    """The bundled photos, plus the other stereo view of the bundled motorcycle scene."""
    paths = {bundled.content_path(c).resolve() for c in bundled.CONTENTS}
    paths.add(bundled._skimage_file("motorcycle_right.png").resolve())
    return paths


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_sources_are_not_evaluation_photos(script):
    forbidden = _forbidden()
    sources = {script.source_path(f).resolve() for f in script.SOURCES}
    assert len(sources) >= 5 and all(p.is_file() for p in sources)
    assert not sources & forbidden
    # not a byte-identical copy under another name either
    assert not {_sha(p) for p in sources} & {_sha(p) for p in forbidden}


def test_script_does_not_import_the_bundled_dataset(script):
    tree = ast.parse(SCRIPT.read_text())
    modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    modules += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [m for m in modules if "bundled" in m], modules


def test_held_out_types_are_not_trained(script):
    assert not set(script.HELD_OUT_TYPES) & set(script.TRAIN_TYPES)
    assert len(script.HELD_OUT_TYPES) >= 4 and len(script.TRAIN_TYPES) >= 10


def test_building_the_data_never_opens_a_bundled_photo(script, monkeypatch):
    """Every file the data-building step opens is recorded (builtins.open, os.open, PIL.Image.open);
    the bundled loaders raise if called. The opened files must include the training photos (so the
    interception works) and none of the bundled photos."""
    forbidden = _forbidden()
    opened: list[Path] = []

    def record(path):
        if isinstance(path, (str, bytes, os.PathLike)):
            p = Path(os.fsdecode(path)).resolve()
            opened.append(p)
            if p in forbidden:
                raise AssertionError(f"training data read the evaluation photo {p}")

    real_open, real_os_open, real_pil_open = builtins.open, os.open, PIL.Image.open

    def spy_open(file, *a, **k):
        record(file)
        return real_open(file, *a, **k)

    def spy_os_open(path, *a, **k):
        record(path)
        return real_os_open(path, *a, **k)

    def spy_pil_open(fp, *a, **k):
        record(fp)
        return real_pil_open(fp, *a, **k)

    def refuse(*a, **k):
        raise AssertionError("training data called the bundled dataset")

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    monkeypatch.setattr(PIL.Image, "open", spy_pil_open)
    for name in ("load_content", "_pristine", "content_path", "_distorted", "BundledDataset"):
        monkeypatch.setattr(bundled, name, refuse)

    # every photo source, at the script's defaults (crops at all scales), plus 2 dead-leaves images
    pristine = script.pristine_images(seed=0, n_leaves=2, log=lambda m: None)
    assert len(pristine) >= 40
    assert all(x.shape == (1, 3, script.SIZE, script.SIZE) for _, x in pristine)
    # the full data path (distortions + MS-SSIM targets) on a reduced set: one photo, one leaf, 2 types
    data = script.build_dataset(seed=0, n_leaves=1, sources=["coins.png"], types_per_image=2, log=lambda m: None)
    assert set(data["types"]) == set(script.TRAIN_TYPES)
    used = {data["types"][d] for d in data["dtype"].tolist() if d >= 0}
    assert used and not used & set(script.HELD_OUT_TYPES)
    assert data["images"].dtype == torch.uint8 and len(data["images"]) == len(data["targets"])

    assert {script.source_path(f).resolve() for f in script.SOURCES} <= set(opened)
    assert not set(opened) & forbidden


def test_content_is_deterministic(script):
    assert torch.equal(script.dead_leaves(7, size=64), script.dead_leaves(7, size=64))
    assert not torch.equal(script.dead_leaves(7, size=64), script.dead_leaves(8, size=64))
    a, b = script.photo_crops("coins.png", 3), script.photo_crops("coins.png", 3)
    assert [n for n, _ in a] == [n for n, _ in b] and all(torch.equal(x, y) for (_, x), (_, y) in zip(a, b))
