"""Published-dataset loaders on tiny fixture folders in each release's own layout.

Layouts as distributed (checked against the releases' documentation and public loaders, see
docs/methods/datasets.md): file names, annotation formats (CSV, whitespace text, MATLAB cell
arrays written with scipy.io.savemat under the release's variable names, Excel) and case quirks.
"""
import hashlib
import math
import sys

import numpy as np
import pytest
import scipy.io
import scipy.stats
import torch
from PIL import Image

import iqaguard as ig
from iqaguard.cli import dataset_spec
from iqaguard.errors import InputError
from iqaguard.images import to_tensor
from iqaguard.registry import DATASETS


def _img(path, seed, size=(8, 6), fmt=None):
    a = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, format=fmt)
    return a


def _sha_order(ids):
    return sorted(ids, key=lambda i: hashlib.sha256(i.encode()).digest())


# --------------------------------------------------------------------------- KonIQ-10k

KONIQ_HEADER = "image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,MOS_zscore\n"
KONIQ_ROWS = {"10004473376.jpg": (3.91, 77.38), "100117038.jpg": (3.36, 75.11), "826373.jpg": (1.42, 18.27)}


@pytest.fixture
def koniq(tmp_path):
    root = tmp_path / "koniq"
    arrays = {}
    for i, name in enumerate(KONIQ_ROWS):
        arrays[name] = _img(root / "512x384" / name, i, (8, 6), "JPEG")
        _img(root / "1024x768" / name, 10 + i, (16, 12), "JPEG")
    body = "".join(f"{n},0.0,0.1,0.2,0.6,0.1,100,{m},0.5,{z}\n" for n, (m, z) in KONIQ_ROWS.items())
    (root / "koniq10k_scores_and_distributions.csv").write_text(KONIQ_HEADER + body)
    return root, arrays


def test_koniq_items_truth_order_and_resolution(koniq):
    root, arrays = koniq
    ds = ig.create_dataset("koniq10k", root=str(root), order="published")
    assert [it.id for it in ds] == list(KONIQ_ROWS)
    assert [it.truth for it in ds] == [m for m, _ in KONIQ_ROWS.values()]
    assert all(it.truth_kind == "mos" and it.group == "all" and it.load_ref is None for it in ds)
    x = ds[0].load()
    assert x.shape == (1, 3, 6, 8) and x.dtype == torch.float32
    with Image.open(root / "512x384" / "10004473376.jpg") as im:            # JPEG: compare to Pillow's decode
        assert torch.equal(x, to_tensor(np.asarray(im.convert("RGB"))))
    big = ig.create_dataset("koniq10k", root=str(root), resolution="1024x768", score="MOS_zscore")
    assert big[0].load().shape == (1, 3, 12, 16)
    assert sorted(it.truth for it in big) == sorted(z for _, z in KONIQ_ROWS.values())
    # default order: sha256 of the id, identical across constructions
    mixed = ig.create_dataset("koniq10k", root=str(root))
    assert [it.id for it in mixed] == _sha_order(KONIQ_ROWS)
    assert [it.id for it in mixed] == [it.id for it in ig.create_dataset("koniq10k", root=str(root))]
    assert mixed.params == {"root": str(root), "resolution": "512x384", "score": "MOS", "order": "mixed"}
    assert [it.id for it in mixed.subset(2)] == _sha_order(KONIQ_ROWS)[:2]


def test_koniq_through_cli_spec(koniq):
    root, _ = koniq
    spec = dataset_spec(f"koniq10k:{root}")
    assert spec == f"koniq10k:root={str(root)!r}"
    ds = DATASETS.create(spec)
    assert ds.params["root"] == str(root) and len(ds) == 3
    rebuilt = DATASETS.create("koniq10k", **ds.params)                # params round-trip
    assert [it.id for it in rebuilt] == [it.id for it in ds]


def test_koniq_errors(koniq, tmp_path):
    root, _ = koniq
    with pytest.raises(InputError, match="koniq10k dataset needs root"):
        ig.create_dataset("koniq10k")
    with pytest.raises(InputError, match="resolution must be one of '512x384', '1024x768'"):
        ig.create_dataset("koniq10k", root=str(root), resolution="640x480")
    csv = root / "koniq10k_scores_and_distributions.csv"
    csv.write_text("image_name,c1,SD\n10004473376.jpg,0.1,0.5\n")
    with pytest.raises(InputError, match=r"needs columns image_name, MOS; missing MOS \(found: image_name, c1, SD\)"):
        ig.create_dataset("koniq10k", root=str(root))
    csv.write_text(KONIQ_HEADER + "10004473376.jpg,0,0,0,0,0,1,3.0,0.5,50\nghost.jpg,0,0,0,0,0,1,2.0,0.5,40\n")
    with pytest.raises(InputError, match=rf"names 1 file\(s\) not found under root '{root}': 'ghost.jpg'"):
        ig.create_dataset("koniq10k", root=str(root))
    csv.write_text(KONIQ_HEADER + "10004473376.jpg,0,0,0,0,0,1,n/a,0.5,50\n")
    with pytest.raises(InputError, match="line 2: MOS 'n/a' is not a number"):
        ig.create_dataset("koniq10k", root=str(root))
    csv.unlink()
    with pytest.raises(InputError, match=rf"root '{root}' has no 'koniq10k_scores_and_distributions.csv'"):
        ig.create_dataset("koniq10k", root=str(root))
    # root one level too high: the error says where the file is
    (root / "koniq10k_scores_and_distributions.csv").write_text(KONIQ_HEADER)
    with pytest.raises(InputError, match="did you mean root="):
        ig.create_dataset("koniq10k", root=str(root.parent))


# --------------------------------------------------------------------------- KADID-10k

@pytest.fixture
def kadid(tmp_path):
    root = tmp_path / "kadid10k"
    arrays = {n: _img(root / "images" / n, i) for i, n in enumerate(
        ["I01.png", "I02.png", "I01_01_01.png", "I01_01_05.png", "I02_25_03.png", "I02_25_04.png"])}
    (root / "dmos.csv").write_text("dist_img,ref_img,dmos,var\n"
                                   "I01_01_01.png,I01.png,4.57,0.496\n"
                                   "I01_01_05.png,I01.png,1.1,0.3\n"
                                   "I02_25_03.png,I02.png,4.27,0.512\n"
                                   "I02_25_04.png,I02.png,4.1,0.746\n")
    return root, arrays


def test_kadid_items_refs_truth(kadid):
    root, arrays = kadid
    ds = ig.create_dataset("kadid10k", root=str(root), order="published")
    assert [it.id for it in ds] == ["I01_01_01.png", "I01_01_05.png", "I02_25_03.png", "I02_25_04.png"]
    assert [it.truth for it in ds] == [4.57, 1.1, 4.27, 4.1]      # higher = better already (level 1 > level 5)
    assert ds.has_ref
    assert torch.equal(ds[1].load(), to_tensor(arrays["I01_01_05.png"]))
    assert torch.equal(ds[1].load_ref(), to_tensor(arrays["I01.png"]))
    assert torch.equal(ds[2].load_ref(), to_tensor(arrays["I02.png"]))
    nr = ig.create_dataset("kadid10k", root=str(root), reference=False)
    assert not nr.has_ref and [it.id for it in nr] == _sha_order([it.id for it in ds])


def test_kadid_errors(kadid):
    root, _ = kadid
    (root / "images" / "I02.png").unlink()
    with pytest.raises(InputError, match=r"dmos.csv' names 1 file\(s\) not found .*: 'I02.png'$"):   # listed once
        ig.create_dataset("kadid10k", root=str(root))
    assert len(ig.create_dataset("kadid10k", root=str(root), reference=False)) == 4   # refs not needed
    (root / "dmos.csv").write_text("dist_img,ref_img,var\nI01_01_01.png,I01.png,0.4\n")
    with pytest.raises(InputError, match="missing dmos"):
        ig.create_dataset("kadid10k", root=str(root))


# --------------------------------------------------------------------------- TID2013

TID_MOS = [("5.51429", "i01_01_1.bmp"), ("5.91429", "i01_11_1.bmp"), ("3.86486", "i01_01_5.bmp"),
           ("4.20000", "i25_24_5.bmp")]


@pytest.fixture
def tid(tmp_path):
    root = tmp_path / "tid2013"
    # the release's case quirks: upper-case I01.BMP / I01_11_1.BMP on disk next to lower-case i25.bmp
    on_disk = {"i01_01_1.bmp": "i01_01_1.bmp", "i01_11_1.bmp": "I01_11_1.BMP", "i01_01_5.bmp": "i01_01_5.bmp",
               "i25_24_5.bmp": "i25_24_5.bmp"}
    arrays = {k: _img(root / "distorted_images" / v, i, fmt="BMP") for i, (k, v) in enumerate(on_disk.items())}
    arrays["I01"] = _img(root / "reference_images" / "I01.BMP", 20, fmt="BMP")
    arrays["I25"] = _img(root / "reference_images" / "i25.bmp", 21, fmt="BMP")
    (root / "mos_with_names.txt").write_text("".join(f"{m} {n}\n" for m, n in TID_MOS) + "\n")
    (root / "mos.txt").write_text("".join(f"{m}\n" for m, _ in TID_MOS))
    return root, arrays


def test_tid2013_case_quirks_refs_truth(tid):
    root, arrays = tid
    ds = ig.create_dataset("tid2013", root=str(root), order="published")
    assert [it.id for it in ds] == [n for _, n in TID_MOS]
    assert [it.truth for it in ds] == [float(m) for m, _ in TID_MOS]
    assert torch.equal(ds[1].load(), to_tensor(arrays["i01_11_1.bmp"]))      # listed lower, stored upper
    assert torch.equal(ds[1].load_ref(), to_tensor(arrays["I01"]))
    assert torch.equal(ds[3].load_ref(), to_tensor(arrays["I25"]))
    assert [it.id for it in ig.create_dataset("tid2013", root=str(root))] == _sha_order([n for _, n in TID_MOS])


def test_tid2013_errors(tid):
    root, _ = tid
    (root / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp\n4.2\n")
    with pytest.raises(InputError, match=r"line 2: expected '<mos> <file name>'"):
        ig.create_dataset("tid2013", root=str(root))
    (root / "mos_with_names.txt").write_text("5.1 i01_01_1.bmp\n4.2 i02_01_1.bmp\n")
    with pytest.raises(InputError, match=r"names 2 file\(s\) not found .*'i02_01_1.bmp', 'i02.bmp'"):
        ig.create_dataset("tid2013", root=str(root))
    (root / "mos_with_names.txt").unlink()
    with pytest.raises(InputError, match=rf"tid2013: root '{root}' has no 'mos_with_names.txt'"):
        ig.create_dataset("tid2013", root=str(root))


# --------------------------------------------------------------------------- LIVE In the Wild Challenge

@pytest.fixture
def livec(tmp_path):
    root = tmp_path / "ChallengeDB_release"
    names = [f"t{i}.bmp" for i in range(1, 8)] + ["100.bmp", "3.bmp", "1001.JPG"]
    mos = [63.96, 25.34, 48.94, 35.89, 66.51, 54.58, 77.88, 32.56, 44.45, 71.2]
    arrays = {}
    for i, n in enumerate(names):
        folder = root / "Images" / ("trainingImages" if n.startswith("t") else "")
        arrays[n] = _img(folder / n, i, fmt="BMP" if n.endswith("bmp") else "JPEG")
    (root / "Data").mkdir(parents=True)
    cell = np.empty((len(names), 1), dtype=object)            # a 1169×1 cell array in the release
    for i, n in enumerate(names):
        cell[i, 0] = n
    scipy.io.savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([mos])})   # 1×1169
    scipy.io.savemat(root / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": np.ones((1, len(names)))})
    return root, names, mos, arrays


def test_livec_mat_files_and_training_images(livec):
    root, names, mos, arrays = livec
    ds = ig.create_dataset("livec", root=str(root), order="published")
    assert [it.id for it in ds] == names[7:]                  # the 7 rater-training images left out
    np.testing.assert_array_equal([it.truth for it in ds], mos[7:])
    assert torch.equal(ds[1].load(), to_tensor(arrays["3.bmp"]))
    full = ig.create_dataset("livec", root=str(root), include_training=True, order="published")
    assert [it.id for it in full] == names
    assert torch.equal(full[0].load(), to_tensor(arrays["t1.bmp"]))        # from Images/trainingImages/
    assert all(it.truth_kind == "mos" and it.load_ref is None for it in full)


def test_livec_errors(livec):
    root, names, _, _ = livec
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.ones((1, 4))})
    with pytest.raises(InputError, match=r"lists 10 images but .*AllMOS_release.mat' has 4 MOS values"):
        ig.create_dataset("livec", root=str(root))
    scipy.io.savemat(root / "Data" / "AllMOS_release.mat", {"MOS": np.ones((1, 10))})
    with pytest.raises(InputError, match=r"has no variable 'AllMOS_release' \(found: MOS\)"):
        ig.create_dataset("livec", root=str(root))
    (root / "Data" / "AllMOS_release.mat").unlink()
    with pytest.raises(InputError, match=rf"livec: root '{root}' has no 'Data/AllMOS_release.mat'"):
        ig.create_dataset("livec", root=str(root))


# --------------------------------------------------------------------------- SPAQ

SPAQ_ROWS = [("00001.jpg", 42.5), ("00002.jpg", 80.0), ("00003.jpg", 12.25)]


@pytest.fixture
def spaq(tmp_path):
    root = tmp_path / "SPAQ"
    arrays = {n: _img(root / "TestImage" / n, i, (40, 30), "JPEG") for i, (n, _) in enumerate(SPAQ_ROWS)}
    (root / "Annotations").mkdir()
    return root, arrays


def _spaq_csv(root):
    (root / "Annotations" / "MOS and Image attribute scores.csv").write_text(
        "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness\n"
        + "".join(f"{n},{m},50,50,50,50,50\n" for n, m in SPAQ_ROWS))


def test_spaq_csv_export_and_short_side(spaq):
    root, _ = spaq
    _spaq_csv(root)
    ds = ig.create_dataset("spaq", root=str(root), order="published")
    assert [(it.id, it.truth) for it in ds] == SPAQ_ROWS
    full = ds[0].load()
    assert full.shape == (1, 3, 30, 40)
    small = ig.create_dataset("spaq", root=str(root), short_side=15, order="published")[0].load()
    assert small.shape == (1, 3, 15, 20)
    # Pillow Lanczos on the decoded 8-bit image is the definition; an area average agrees to a few levels
    ref = torch.nn.functional.avg_pool2d(full, 2)
    assert (small - ref).abs().mean() < 0.08


def test_spaq_xlsx_needs_openpyxl_or_a_csv(spaq, monkeypatch):
    root, _ = spaq
    (root / "Annotations" / "MOS and Image attribute scores.xlsx").write_bytes(b"PK\x03\x04 not really")
    monkeypatch.setitem(sys.modules, "openpyxl", None)          # import fails as when not installed
    with pytest.raises(InputError, match=r"needs openpyxl, which is not installed.*export the sheet as CSV .*"
                                         r"MOS and Image attribute scores\.csv"):
        ig.create_dataset("spaq", root=str(root))
    _spaq_csv(root)                                              # a CSV export next to it is used instead
    assert len(ig.create_dataset("spaq", root=str(root))) == 3


def test_spaq_xlsx_with_openpyxl(spaq):
    openpyxl = pytest.importorskip("openpyxl")
    root, _ = spaq
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"])
    for n, m in SPAQ_ROWS:
        ws.append([n, m, 50, 50, 50, 50, 50])
    wb.save(root / "Annotations" / "MOS and Image attribute scores.xlsx")
    ds = ig.create_dataset("spaq", root=str(root), order="published")
    assert [(it.id, it.truth) for it in ds] == SPAQ_ROWS


def test_spaq_errors(spaq):
    root, _ = spaq
    with pytest.raises(InputError, match="has no 'Annotations/MOS and Image attribute scores.csv' or "
                                         "'Annotations/MOS and Image attribute scores.xlsx'"):
        ig.create_dataset("spaq", root=str(root))
    _spaq_csv(root)
    with pytest.raises(InputError, match="short_side must be an integer >= 0"):
        ig.create_dataset("spaq", root=str(root), short_side=-1)


# --------------------------------------------------------------------------- AGIQA-3K

AGIQA_CSV = ("name,prompt,adj1,adj2,style,mos_quality,std_quality,mos_align,std_align\n"
             "AttnGAN_normal_000.jpg,statue of a man,,,,0.965602553,0.22,0.40889324,0.61\n"
             "sd1.5_normal_001.jpg,\"a tray of sushi, anime style\",,,anime style,3.1,0.64,2.5,0.66\n"
             "midjourney_lowstep_002.jpg,man lost in space,,,,4.2,0.94,3.9,0.72\n")


@pytest.mark.parametrize("sub", ["", "images"])
def test_agiqa3k_quality_and_align(tmp_path, sub):
    root = tmp_path / "AGIQA-3K"
    names = ["AttnGAN_normal_000.jpg", "sd1.5_normal_001.jpg", "midjourney_lowstep_002.jpg"]
    arrays = {n: _img((root / sub if sub else root) / n, i, fmt="JPEG") for i, n in enumerate(names)}
    (root / "data.csv").write_text(AGIQA_CSV)
    ds = ig.create_dataset("agiqa3k", root=str(root), order="published")
    assert [it.id for it in ds] == names
    assert [it.truth for it in ds] == [0.965602553, 3.1, 4.2]
    assert ds[2].load().shape == (1, 3, 6, 8)
    align = ig.create_dataset("agiqa3k", root=str(root), score="align", order="published")
    assert [it.truth for it in align] == [0.40889324, 2.5, 3.9]
    del arrays


def test_agiqa3k_errors(tmp_path):
    root = tmp_path / "AGIQA-3K"
    root.mkdir()
    (root / "data.csv").write_text(AGIQA_CSV)
    with pytest.raises(InputError, match=r"first image .*'AttnGAN_normal_000.jpg', is not under root .*"
                                         r"looked in '\.', 'images'"):
        ig.create_dataset("agiqa3k", root=str(root))
    (root / "data.csv").write_text("name,prompt,mos_quality\nx.jpg,p,1.0\n")
    _img(root / "x.jpg", 0, fmt="JPEG")
    assert len(ig.create_dataset("agiqa3k", root=str(root))) == 1
    with pytest.raises(InputError, match=r"needs columns name, mos_align; missing mos_align"):
        ig.create_dataset("agiqa3k", root=str(root), score="align")


# --------------------------------------------------------------------------- NIPS 2017 DEV set

def test_nips2017_images_without_mos(tmp_path):
    root = tmp_path / "nips-2017-adversarial-learning-development-set"
    ids = ["0c7ac4a8c9dfa802", "0e0a76d1c8ab1d43", "1a4dd9b7b4b54e2b"]
    arrays = {i: _img(root / "images" / f"{i}.png", k, (12, 12)) for k, i in enumerate(ids)}
    (root / "images.csv").write_text(
        "ImageId,URL,x1,y1,x2,y2,TrueLabel,TargetClass,OriginalLandingURL,License,Author,AuthorProfileURL\n"
        + "".join(f"{i},https://x/{i}.jpg,0,0,1,1,306,1,https://x,CC BY 2.0,a,https://a\n" for i in ids))
    ds = ig.create_dataset("nips2017", root=str(root), order="published")
    assert [it.id for it in ds] == [f"{i}.png" for i in ids]
    assert all(it.truth is None and it.load_ref is None for it in ds)
    assert torch.equal(ds[2].load(), to_tensor(arrays[ids[2]]))
    (root / "images" / f"{ids[0]}.png").unlink()
    with pytest.raises(InputError, match=rf"names 1 file\(s\) not found under root '{root}': '{ids[0]}.png'"):
        ig.create_dataset("nips2017", root=str(root))
    (root / "images.csv").write_text("Id,URL\nx,y\n")
    with pytest.raises(InputError, match=r"needs columns ImageId; missing ImageId \(found: Id, URL\)"):
        ig.create_dataset("nips2017", root=str(root))


def test_bad_order_is_rejected(tmp_path):
    with pytest.raises(InputError, match="order must be one of 'mixed', 'published'"):
        ig.create_dataset("nips2017", root=str(tmp_path), order="random")


# --------------------------------------------------------------------------- end to end

def test_benchmark_reports_srocc_vs_mos(tmp_path):
    """A KonIQ-layout folder through ig.benchmark: SROCC of the metric vs MOS lands in the summary."""
    from iqaguard.data.bundled import load_content
    from iqaguard.data.distortions import DISTORTIONS

    root = tmp_path / "koniq"
    (root / "512x384").mkdir(parents=True)
    pristine = load_content("coffee", 192)
    rows = []
    for level, mos in zip((1, 2, 3, 5), (4.1, 3.4, 2.6, 1.3)):        # more blur, lower MOS
        x = DISTORTIONS["gaussian_blur"](pristine, level, 0)
        name = f"coffee_blur{level}.jpg"
        Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(
            root / "512x384" / name, quality=95)
        rows.append(f"{name},0,0,0,0,0,100,{mos},0.5,50\n")
    (root / "koniq10k_scores_and_distributions.csv").write_text(KONIQ_HEADER + "".join(rows))
    res = ig.benchmark(metrics=["niqe"], attacks=["fgsm:eps=2/255"], defenses=["no-defense"],
                       dataset=dataset_spec(f"koniq10k:{root}"), out=tmp_path / "out", report=False)
    assert res.errors == 0 and len(res.rows) == 4
    srocc = float(res.summary["srocc_clear"].iloc[0])
    assert math.isfinite(srocc)
    # independent check: scipy's Spearman of the (sign-corrected: NIQE is lower-better) clean scores vs MOS
    expected = scipy.stats.spearmanr(-res.rows["clear"], res.rows["truth"]).statistic
    assert srocc == pytest.approx(expected, abs=1e-9)
