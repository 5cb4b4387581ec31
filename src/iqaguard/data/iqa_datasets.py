"""Published IQA datasets read from a local folder in the layout their authors distribute.

Nothing is downloaded: point ``root`` at the unpacked release (``iqaguard run --data
koniq10k:/data/koniq`` is shorthand for ``koniq10k:root='/data/koniq'``). Each loader reads the
release's own annotation file, converts its score to ``truth`` with higher = better (every score
here already is: MOS, or KADID-10k's "dmos", which is a 1–5 mean rating where 5 is best), checks
that every listed file exists, and raises ``InputError`` naming the root and the missing file or
column otherwise. Images are read lazily.

Order: ``order="mixed"`` (default) sorts items by the SHA-256 of their id — a fixed pseudo-random
order, independent of the file system, so ``limit=N`` takes a spread-out sample (the releases list
KADID-10k/TID2013 by content, AGIQA-3K by generator); ``order="published"`` keeps the file's order.
The expected layouts, score scales and citations are in docs/methods/datasets.md.
"""
from __future__ import annotations

import functools
import hashlib
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import InputError
from ..images import load_image, to_tensor, to_uint8
from ..registry import DATASETS
from .annotations import (CaseFolder, check_root, check_unique, find_path, mat_strings, missing_files_error,
                          parse_score, pick_columns, read_csv_rows, read_mat_variable, read_xlsx_rows,
                          require_dir, require_file)
from .base import Dataset, Item

ORDERS = ("mixed", "published")


def _check_choice(value, choices: Sequence[str], name: str, dataset: str) -> str:
    if value not in choices:
        raise InputError(f"{dataset}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _ordered(items: list[Item], order: str) -> list[Item]:
    if order == "published":
        return items
    return sorted(items, key=lambda it: hashlib.sha256(it.id.encode("utf-8")).digest())


def _load_short_side(path: Path, short_side: int):
    """The image, downscaled (Pillow Lanczos, antialiased) so its shorter side is ``short_side``."""
    x = load_image(path)
    h, w = x.shape[-2:]
    s = min(h, w)
    if s <= short_side:
        return x
    size = (max(1, round(w * short_side / s)), max(1, round(h * short_side / s)))
    img = Image.fromarray(to_uint8(x)).resize(size, Image.Resampling.LANCZOS)
    return to_tensor(np.asarray(img))


class _Resolver:
    """Finds listed files in one or more folders (case-insensitively) and collects the missing."""

    def __init__(self, *folders: Path):
        self.folders = [CaseFolder(f) for f in folders]
        self.missing: list[str] = []

    def __call__(self, name: str) -> Path | None:
        for f in self.folders:
            p = f.find(name)
            if p is not None and p.is_file():
                return p
        self.missing.append(name)
        return None


class _Published(Dataset):
    """Shared constructor tail: name, params, order, the missing-file check."""

    def _finish(self, name: str, params: dict, root: Path, source: Path, items: list[Item],
                resolvers: Sequence[_Resolver]) -> None:
        missing = list(dict.fromkeys(m for r in resolvers for m in r.missing))   # a reference is listed often
        if missing:
            raise missing_files_error(source, root, missing)
        if not items:
            raise InputError(f"{name}: {str(source)!r} lists no images")
        self.name = name
        self.params = params
        self.root = root
        self.source = source
        super().__init__(_ordered(items, params["order"]))


def _table(path: Path, dataset: str, csv_hint: str = "") -> tuple[list[str], list[dict[str, str]]]:
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return read_xlsx_rows(path, dataset, csv_hint)
    header, rows = read_csv_rows(path)
    if not rows:
        raise InputError(f"{dataset}: csv file {str(path)!r} has a header but no rows")
    return header, rows


def _loader(path: Path | None, load: Callable = load_image):
    return functools.partial(load, path) if path is not None else None


# --------------------------------------------------------------------------- KonIQ-10k

@DATASETS.register("koniq10k")
class KonIQ10k(_Published):
    """KonIQ-10k (Hosu et al., IEEE TIP 2020): 10 073 in-the-wild photos, crowd MOS."""

    RESOLUTIONS = ("512x384", "1024x768")
    SCORES = ("MOS", "MOS_zscore")
    CSV = ("koniq10k_scores_and_distributions.csv",
           "koniq10k_scores_and_distributions/koniq10k_scores_and_distributions.csv")

    def __init__(self, root: str = "", resolution: str = "512x384", score: str = "MOS", order: str = "mixed"):
        name = "koniq10k"
        root_path = check_root(root, name, "folder with koniq10k_scores_and_distributions.csv and 512x384/")
        _check_choice(resolution, self.RESOLUTIONS, "resolution", name)
        _check_choice(score, self.SCORES, "score", name)
        _check_choice(order, ORDERS, "order", name)
        source = require_file(root_path, self.CSV, name)
        header, rows = _table(source, name)
        col = pick_columns(source, header, {"image": ("image_name",), "mos": (score,)})
        find = _Resolver(require_dir(root_path, [resolution], name))
        items = []
        for line, row in enumerate(rows, start=2):
            img = (row.get(col["image"]) or "").strip()
            if not img:
                raise InputError(f"{name}: {str(source)!r} line {line}: empty image name")
            mos = parse_score(row.get(col["mos"]) or "", f"{str(source)!r} line {line}", score)
            items.append(Item(id=img, load=_loader(find(img)), truth=mos, truth_kind="mos"))
        check_unique((it.id for it in items), source)
        self._finish(name, {"root": root, "resolution": resolution, "score": score, "order": order},
                     root_path, source, items, [find])


# --------------------------------------------------------------------------- KADID-10k

@DATASETS.register("kadid10k")
class KADID10k(_Published):
    """KADID-10k (Lin, Hosu & Saupe, QoMEX 2019): 81 references × 25 distortions × 5 levels."""

    def __init__(self, root: str = "", reference: bool = True, order: str = "mixed"):
        name = "kadid10k"
        root_path = check_root(root, name, "folder with dmos.csv and images/")
        _check_choice(order, ORDERS, "order", name)
        if not isinstance(reference, bool):
            raise InputError(f"{name}: reference must be true or false, got {reference!r}")
        source = require_file(root_path, ["dmos.csv"], name)
        header, rows = _table(source, name)
        col = pick_columns(source, header, {"dist": ("dist_img",), "ref": ("ref_img",), "mos": ("dmos",)})
        find = _Resolver(require_dir(root_path, ["images"], name))
        items = []
        for line, row in enumerate(rows, start=2):
            dist = (row.get(col["dist"]) or "").strip()
            ref = (row.get(col["ref"]) or "").strip()
            if not dist or (reference and not ref):
                raise InputError(f"{name}: {str(source)!r} line {line}: empty image name")
            mos = parse_score(row.get(col["mos"]) or "", f"{str(source)!r} line {line}", "dmos")
            items.append(Item(id=dist, load=_loader(find(dist)),
                              load_ref=_loader(find(ref)) if reference else None, truth=mos, truth_kind="mos"))
        check_unique((it.id for it in items), source)
        self._finish(name, {"root": root, "reference": reference, "order": order}, root_path, source, items, [find])


# --------------------------------------------------------------------------- LIVE In the Wild Challenge

@DATASETS.register("livec")
class LIVEChallenge(_Published):
    """LIVE In the Wild Image Quality Challenge (Ghadiyaram & Bovik, IEEE TIP 2016): 1 162 photos, MOS 0–100."""

    N_TRAINING = 7     # the release's first 7 entries (t1..t7.bmp, Images/trainingImages/) trained the raters

    def __init__(self, root: str = "", include_training: bool = False, order: str = "mixed"):
        name = "livec"
        root_path = check_root(root, name, "ChallengeDB_release folder with Data/ and Images/")
        _check_choice(order, ORDERS, "order", name)
        if not isinstance(include_training, bool):
            raise InputError(f"{name}: include_training must be true or false, got {include_training!r}")
        names_file = require_file(root_path, ["Data/AllImages_release.mat"], name)
        mos_file = require_file(root_path, ["Data/AllMOS_release.mat"], name)
        names = mat_strings(read_mat_variable(names_file, "AllImages_release"))
        mos = np.asarray(read_mat_variable(mos_file, "AllMOS_release"), dtype=np.float64).ravel()
        if len(names) != len(mos):
            raise InputError(f"{name}: {str(names_file)!r} lists {len(names)} images but {str(mos_file)!r} "
                             f"has {len(mos)} MOS values")
        if not np.isfinite(mos).all():
            raise InputError(f"{name}: {str(mos_file)!r} holds non-finite MOS values")
        images = require_dir(root_path, ["Images"], name)
        training = find_path(images, "trainingImages")
        find = _Resolver(images, *([training] if training is not None and training.is_dir() else []))
        start = 0 if include_training else self.N_TRAINING
        items = [Item(id=n, load=_loader(find(n)), truth=float(m), truth_kind="mos")
                 for n, m in zip(names[start:], mos[start:])]
        check_unique((it.id for it in items), names_file)
        self._finish(name, {"root": root, "include_training": include_training, "order": order},
                     root_path, names_file, items, [find])


# --------------------------------------------------------------------------- SPAQ

@DATASETS.register("spaq")
class SPAQ(_Published):
    """SPAQ (Fang et al., CVPR 2020): 11 125 smartphone photos, MOS 0–100."""

    STEM = "Annotations/MOS and Image attribute scores"

    def __init__(self, root: str = "", short_side: int = 0, order: str = "mixed"):
        name = "spaq"
        root_path = check_root(root, name, "folder with Annotations/ and TestImage/")
        _check_choice(order, ORDERS, "order", name)
        if isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < 0:
            raise InputError(f"{name}: short_side must be an integer >= 0 (0 = full size), got {short_side!r}")
        # a CSV export wins over the Excel original, so openpyxl is only needed without one
        source = require_file(root_path, [self.STEM + ".csv", self.STEM + ".xlsx"], name)
        header, rows = _table(source, name, csv_hint=str(source.with_suffix(".csv")))
        col = pick_columns(source, header, {"image": ("Image name", "Image_name", "image"), "mos": ("MOS",)})
        find = _Resolver(require_dir(root_path, ["TestImage"], name))
        load = functools.partial(_load_short_side, short_side=short_side) if short_side else load_image
        items = []
        for line, row in enumerate(rows, start=2):
            img = (row.get(col["image"]) or "").strip()
            if not img:
                raise InputError(f"{name}: {str(source)!r} row {line}: empty image name")
            mos = parse_score(row.get(col["mos"]) or "", f"{str(source)!r} row {line}")
            items.append(Item(id=img, load=_loader(find(img), load), truth=mos, truth_kind="mos"))
        check_unique((it.id for it in items), source)
        self._finish(name, {"root": root, "short_side": short_side, "order": order}, root_path, source, items, [find])


# --------------------------------------------------------------------------- TID2013

_TID_LINE = re.compile(r"^\s*(\S+)\s+(\S+)\s*$")


@DATASETS.register("tid2013")
class TID2013(_Published):
    """TID2013 (Ponomarenko et al., Signal Process. Image Commun. 2015): 25 references × 24 × 5, MOS 0–9."""

    def __init__(self, root: str = "", reference: bool = True, order: str = "mixed"):
        name = "tid2013"
        root_path = check_root(root, name, "folder with mos_with_names.txt, distorted_images/ and reference_images/")
        _check_choice(order, ORDERS, "order", name)
        if not isinstance(reference, bool):
            raise InputError(f"{name}: reference must be true or false, got {reference!r}")
        source = require_file(root_path, ["mos_with_names.txt"], name)
        try:
            lines = source.read_text(encoding="utf-8-sig", errors="strict").splitlines()
        except UnicodeDecodeError as exc:
            raise InputError(f"{name}: {str(source)!r} is not text: {exc}") from None
        find = _Resolver(require_dir(root_path, ["distorted_images"], name))
        find_ref = _Resolver(require_dir(root_path, ["reference_images"], name)) if reference else None
        items = []
        for i, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            m = _TID_LINE.match(text)
            if m is None:
                raise InputError(f"{name}: {str(source)!r} line {i}: expected '<mos> <file name>', got {text!r}")
            mos = parse_score(m.group(1), f"{str(source)!r} line {i}")
            dist = m.group(2)
            load_ref = None
            if find_ref is not None:
                # i01_01_1.bmp -> reference i01.bmp (stored as I01.BMP … i25.bmp: matched case-insensitively)
                load_ref = _loader(find_ref(dist[:3] + ".bmp"))
            items.append(Item(id=dist, load=_loader(find(dist)), load_ref=load_ref, truth=mos, truth_kind="mos"))
        check_unique((it.id.casefold() for it in items), source)
        self._finish(name, {"root": root, "reference": reference, "order": order}, root_path, source, items,
                     [find] + ([find_ref] if find_ref else []))


# --------------------------------------------------------------------------- AGIQA-3K

@DATASETS.register("agiqa3k")
class AGIQA3K(_Published):
    """AGIQA-3K (Li et al., IEEE TCSVT 2023): about 3 000 AI-generated images, quality and alignment MOS."""

    SCORES = {"quality": "mos_quality", "align": "mos_align"}
    IMAGE_DIRS = ("", "images", "image", "AGIQA-3K")

    def __init__(self, root: str = "", score: str = "quality", order: str = "mixed"):
        name = "agiqa3k"
        root_path = check_root(root, name, "folder with data.csv and the images")
        _check_choice(score, tuple(self.SCORES), "score", name)
        _check_choice(order, ORDERS, "order", name)
        source = require_file(root_path, ["data.csv"], name)
        header, rows = _table(source, name)
        col = pick_columns(source, header, {"image": ("name",), "mos": (self.SCORES[score],)})
        first = (rows[0].get(col["image"]) or "").strip()
        folder = None
        for rel in self.IMAGE_DIRS:     # the archives differ: images next to data.csv or in a subfolder
            d = find_path(root_path, rel) if rel else root_path
            if d is not None and d.is_dir() and CaseFolder(d).find(first) is not None:
                folder = d
                break
        if folder is None:
            where = ", ".join(repr(r or ".") for r in self.IMAGE_DIRS)
            raise InputError(f"{name}: the first image of {str(source)!r}, {first!r}, is not under root "
                             f"{str(root_path)!r} (looked in {where})")
        find = _Resolver(folder)
        items = []
        for line, row in enumerate(rows, start=2):
            img = (row.get(col["image"]) or "").strip()
            if not img:
                raise InputError(f"{name}: {str(source)!r} line {line}: empty image name")
            mos = parse_score(row.get(col["mos"]) or "", f"{str(source)!r} line {line}", self.SCORES[score])
            items.append(Item(id=img, load=_loader(find(img)), truth=mos, truth_kind="mos"))
        check_unique((it.id for it in items), source)
        self._finish(name, {"root": root, "score": score, "order": order}, root_path, source, items, [find])


# --------------------------------------------------------------------------- NIPS 2017 adversarial competition

@DATASETS.register("nips2017")
class NIPS2017(_Published):
    """NIPS 2017 adversarial-competition DEV set: 1 000 ImageNet-compatible 299×299 PNGs, no MOS."""

    CSV = ("images.csv", "dev_dataset.csv")

    def __init__(self, root: str = "", order: str = "mixed"):
        name = "nips2017"
        root_path = check_root(root, name, "folder with images.csv and images/")
        _check_choice(order, ORDERS, "order", name)
        source = require_file(root_path, self.CSV, name)
        header, rows = _table(source, name)
        col = pick_columns(source, header, {"image": ("ImageId",)})
        find = _Resolver(require_dir(root_path, ["images"], name))
        items = []
        for line, row in enumerate(rows, start=2):
            image_id = (row.get(col["image"]) or "").strip()
            if not image_id:
                raise InputError(f"{name}: {str(source)!r} line {line}: empty ImageId")
            file = image_id + ".png"
            items.append(Item(id=file, load=_loader(find(file)), truth=None, truth_kind="mos"))
        check_unique((it.id for it in items), source)
        self._finish(name, {"root": root, "order": order}, root_path, source, items, [find])
