"""Generic folder + CSV loader."""
import numpy as np
import pytest
import torch
from PIL import Image

import iqaguard as ig
from iqaguard.data.folder import FolderDataset
from iqaguard.errors import InputError
from iqaguard.images import to_tensor


def _write(path, seed, fmt=None, size=(24, 16)):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, format=fmt)
    return a


@pytest.fixture
def folder(tmp_path):
    arrays = {
        "a.png": _write(tmp_path / "a.png", 0),
        "b.PNG": _write(tmp_path / "b.PNG", 1),
        "sub/c.jpg": _write(tmp_path / "sub" / "c.jpg", 2, "JPEG"),
        "ref.png": _write(tmp_path / "ref.png", 3),
    }
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path, arrays


def test_csv_gives_items_truth_and_pixels(folder):
    root, arrays = folder
    (root / "mos.csv").write_text("image,mos\nsub/c.jpg,3.5\na.png,1.25\nb.PNG,4\n")
    ds = ig.create_dataset("folder", root=str(root))
    assert [it.id for it in ds] == ["sub/c.jpg", "a.png", "b.PNG"]          # CSV order
    assert [it.truth for it in ds] == [3.5, 1.25, 4.0]
    assert all(it.truth_kind == "mos" and it.group == "all" and it.load_ref is None for it in ds)
    assert not ds.has_ref
    assert torch.equal(ds[1].load(), to_tensor(arrays["a.png"]))          # PNG is lossless
    c = ds[0].load()
    assert c.shape == (1, 3, 16, 24) and c.dtype == torch.float32
    assert ds.params == {"root": str(root), "csv": "", "extensions": "png,jpg,jpeg,bmp,tif,tiff,webp"}


def test_optional_ref_and_group_columns_and_explicit_csv(folder, tmp_path_factory):
    root, arrays = folder
    other = tmp_path_factory.mktemp("elsewhere") / "scores.csv"
    other.write_text("Image , MOS ,ref,group\na.png,2,ref.png,g1\nb.PNG,3,,g2\n")
    ds = FolderDataset(root=str(root), csv=str(other))
    assert torch.equal(ds[0].load_ref(), to_tensor(arrays["ref.png"]))
    assert ds[1].load_ref is None
    assert [it.group for it in ds] == ["g1", "g2"]
    # a relative csv path is looked up under root too
    (root / "lists").mkdir()
    (root / "lists" / "m.csv").write_text("image,mos\na.png,5\n")
    assert [it.id for it in FolderDataset(root=str(root), csv="lists/m.csv")] == ["a.png"]


def test_without_csv_scans_images_recursively(folder):
    root, _ = folder
    ds = FolderDataset(root=str(root))
    assert [it.id for it in ds] == ["a.png", "b.PNG", "ref.png", "sub/c.jpg"]
    assert all(it.truth is None for it in ds)
    only_jpg = FolderDataset(root=str(root), extensions=".JPG")
    assert [it.id for it in only_jpg] == ["sub/c.jpg"]


def test_missing_root(tmp_path):
    with pytest.raises(InputError, match="needs root"):
        FolderDataset()
    with pytest.raises(InputError, match="does not exist"):
        FolderDataset(root=str(tmp_path / "nope"))
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(InputError, match="not a folder"):
        FolderDataset(root=str(tmp_path / "f.png"))


def test_empty_folder(tmp_path):
    with pytest.raises(InputError, match="no images"):
        FolderDataset(root=str(tmp_path))


def test_csv_without_required_columns(folder):
    root, _ = folder
    (root / "mos.csv").write_text("filename,score\na.png,1\n")
    with pytest.raises(InputError, match=r"needs columns image,mos; missing image, mos \(found: filename, score\)"):
        FolderDataset(root=str(root))


def test_csv_naming_missing_files(folder):
    root, _ = folder
    (root / "mos.csv").write_text("image,mos\na.png,1\nghost.png,2\nb.PNG,3,\nlost/x.jpg,4\n")
    with pytest.raises(InputError, match=r"names 2 file\(s\) not found .*'ghost.png', 'lost/x.jpg'"):
        FolderDataset(root=str(root))


@pytest.mark.parametrize("body, match", [
    ("image,mos\na.png,good\n", "line 2: mos 'good' is not a number"),
    ("image,mos\na.png,nan\n", "not finite"),
    ("image,mos\na.png,1\na.png,2\n", "line 3: image 'a.png' listed twice"),
    ("image,mos\n,1\n", "empty image name"),
    ("image,mos\n", "no rows"),
])
def test_bad_csv_rows(folder, body, match):
    root, _ = folder
    (root / "mos.csv").write_text(body)
    with pytest.raises(InputError, match=match):
        FolderDataset(root=str(root))


def test_missing_explicit_csv(folder):
    root, _ = folder
    with pytest.raises(InputError, match="csv file 'absent.csv' does not exist"):
        FolderDataset(root=str(root), csv="absent.csv")


def test_corrupt_image_is_reported_at_load(folder):
    root, _ = folder
    (root / "bad.png").write_bytes(b"not a png at all")
    (root / "mos.csv").write_text("image,mos\nbad.png,1\n")
    ds = FolderDataset(root=str(root))
    with pytest.raises(InputError, match="bad.png"):
        ds[0].load()
