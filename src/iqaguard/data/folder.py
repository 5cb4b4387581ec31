"""Any folder of images, with an optional CSV of human scores (columns ``image``, ``mos``).

The generic entry point for a user's own data and the layout the published-dataset loaders reduce
to. CSV paths are relative to ``root``; an optional ``ref`` column names a reference image (for
full-reference metrics) and an optional ``group`` column the set within which MOS is comparable.
Without a CSV every image under ``root`` (recursively, by extension) is an item without truth.
Files are read lazily with :func:`iqaguard.images.load_image`.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

from ..errors import InputError
from ..images import load_image
from ..registry import DATASETS
from .annotations import check_root, missing_files_error
from .annotations import read_csv_rows as _read_rows
from .base import Dataset, Item

DEFAULT_CSV = "mos.csv"


def _parse_extensions(value: str) -> set[str]:
    if not isinstance(value, str):
        raise InputError(f"extensions must be a comma-separated string such as 'png,jpg', got {type(value).__name__}")
    exts = {"." + e.strip().lower().lstrip(".") for e in value.split(",") if e.strip().lstrip(".")}
    if not exts:
        raise InputError(f"extensions lists no extension: {value!r}")
    return exts


def _resolve_csv(root: Path, csv: str) -> Path | None:
    if not isinstance(csv, str):
        raise InputError(f"csv must be a path string, got {type(csv).__name__}")
    if not csv.strip():
        default = root / DEFAULT_CSV
        return default if default.is_file() else None
    p = Path(csv).expanduser()
    for candidate in ([p] if p.is_absolute() else [p, root / p]):
        if candidate.is_file():
            return candidate
    raise InputError(f"csv file {csv!r} does not exist (looked in the working directory and in root {str(root)!r})")


@DATASETS.register("folder")
class FolderDataset(Dataset):
    """Images under ``root``; MOS from ``csv`` (default ``<root>/mos.csv`` when present)."""

    def __init__(self, root: str = "", csv: str = "", extensions: str = "png,jpg,jpeg,bmp,tif,tiff,webp"):
        root_path = check_root(root, "folder", "folder of images")
        exts = _parse_extensions(extensions)
        csv_path = _resolve_csv(root_path, csv)
        self.name = "folder"
        self.params = {"root": root, "csv": csv, "extensions": extensions}
        self.root = root_path
        self.csv_path = csv_path
        items = self._from_csv(root_path, csv_path) if csv_path else self._from_scan(root_path, exts)
        super().__init__(items)

    @staticmethod
    def _from_scan(root: Path, exts: set[str]) -> list[Item]:
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        if not files:
            raise InputError(f"root folder {str(root)!r} holds no images with extensions {', '.join(sorted(exts))}")
        return [Item(id=p.relative_to(root).as_posix(), load=functools.partial(load_image, p), truth=None)
                for p in files]

    @staticmethod
    def _from_csv(root: Path, csv_path: Path) -> list[Item]:
        header, rows = _read_rows(csv_path)
        lower = {h.lower(): h for h in header}
        missing_cols = [c for c in ("image", "mos") if c not in lower]
        if missing_cols:
            raise InputError(f"csv file {str(csv_path)!r} needs columns image,mos; missing "
                             f"{', '.join(missing_cols)} (found: {', '.join(header) or 'no header'})")
        col = {k: lower.get(k) for k in ("image", "mos", "ref", "group")}
        if not rows:
            raise InputError(f"csv file {str(csv_path)!r} has a header but no rows")
        items, missing, seen = [], [], set()
        for line, row in enumerate(rows, start=2):
            name = (row.get(col["image"]) or "").strip()
            if not name:
                raise InputError(f"csv file {str(csv_path)!r} line {line}: empty image name")
            if name in seen:
                raise InputError(f"csv file {str(csv_path)!r} line {line}: image {name!r} listed twice")
            seen.add(name)
            raw = (row.get(col["mos"]) or "").strip()
            try:
                mos = float(raw)
            except ValueError:
                raise InputError(f"csv file {str(csv_path)!r} line {line}: mos {raw!r} is not a number") from None
            if not math.isfinite(mos):
                raise InputError(f"csv file {str(csv_path)!r} line {line}: mos {raw!r} is not finite")
            path = root / name
            if not path.is_file():
                missing.append(name)
            load_ref = None
            ref = (row.get(col["ref"]) or "").strip() if col["ref"] else ""
            if ref:
                ref_path = root / ref
                if not ref_path.is_file():
                    missing.append(ref)
                load_ref = functools.partial(load_image, ref_path)
            group = ((row.get(col["group"]) or "").strip() if col["group"] else "") or "all"
            items.append(Item(id=Path(name).as_posix(), load=functools.partial(load_image, path),
                              load_ref=load_ref, truth=mos, group=group, truth_kind="mos"))
        if missing:
            raise missing_files_error(csv_path, root, missing)
        return items
