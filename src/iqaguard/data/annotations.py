"""Reading dataset folders and their annotation files (CSV, text, MATLAB, Excel) with clear errors.

Shared by the generic ``folder`` loader and the published-dataset loaders, so every loader reports
a missing root, file or column the same way: naming the root, the file and what was expected.
File names are matched case-insensitively where a release is inconsistent about case (TID2013
ships ``I01.BMP`` next to ``i25.bmp``), exact matches winning.
"""
from __future__ import annotations

import csv as csvlib
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError
from ..paths import readable_dir, readable_file


def check_root(root: str, dataset: str, what: str) -> Path:
    """``root`` as an existing folder, or an InputError naming the dataset."""
    if not isinstance(root, str) or not root.strip():
        raise InputError(f"{dataset} dataset needs root=<{what}>, got an empty root")
    # missing, a file, a symlink loop or unlistable (permission denied): one line naming root
    return readable_dir(Path(root).expanduser(), "root folder")


class CaseFolder:
    """The files of one folder by name: exact first, then case-insensitive (listed once)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            names = os.listdir(path)
        except OSError:
            names = []
        self.exact = set(names)
        self.folded: dict[str, str] = {}
        for n in sorted(names):               # sorted: a deterministic pick if two names fold together
            self.folded.setdefault(n.casefold(), n)

    def find(self, name: str) -> Path | None:
        if name in self.exact:
            return self.path / name
        hit = self.folded.get(name.casefold())
        return self.path / hit if hit is not None else None


def find_path(root: Path, rel: str) -> Path | None:
    """``root/rel`` resolved one component at a time, case-insensitively; None if absent."""
    cur = root
    for part in Path(rel).parts:
        nxt = CaseFolder(cur).find(part)
        if nxt is None:
            return None
        cur = nxt
    return cur


def require_file(root: Path, candidates: Sequence[str], dataset: str) -> Path:
    """The first of ``candidates`` (paths relative to root) that is a file, else a helpful InputError."""
    for rel in candidates:
        p = find_path(root, rel)
        if p is not None and p.is_file():
            return p
    names = " or ".join(repr(c) for c in candidates)
    hint = ""
    for sub in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if any((q := find_path(sub, rel)) is not None and q.is_file() for rel in candidates):
            hint = f"; found it in {str(sub)!r} — did you mean root={str(sub)!r}?"
            break
    raise InputError(f"{dataset}: root {str(root)!r} has no {names}{hint}")


def require_dir(root: Path, candidates: Sequence[str], dataset: str) -> Path:
    for rel in candidates:
        p = find_path(root, rel) if rel else root
        if p is not None and p.is_dir():
            return p
    raise InputError(f"{dataset}: root {str(root)!r} has no folder {' or '.join(repr(c) for c in candidates)}")


# --------------------------------------------------------------------------- tables

def read_csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    """Header (stripped) and rows of a UTF-8 CSV file (a BOM is ignored)."""
    readable_file(path, "csv file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csvlib.DictReader(fh)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = list(reader)
    except UnicodeDecodeError as exc:
        raise InputError(f"csv file {str(path)!r} is not UTF-8 text: {exc}") from None
    except csvlib.Error as exc:
        raise InputError(f"csv file {str(path)!r} is malformed: {exc}") from None
    return header, rows


def read_xlsx_rows(path: Path, dataset: str, csv_hint: str) -> tuple[list[str], list[dict[str, str]]]:
    """First sheet of an Excel file as (header, rows of strings); needs the optional openpyxl."""
    try:
        import openpyxl
    except ImportError:
        raise InputError(
            f"{dataset}: {str(path)!r} is an Excel file and reading it needs openpyxl, which is not installed. "
            f"Either `pip install openpyxl`, or export the sheet as CSV (UTF-8, same columns) to {csv_hint!r} "
            f"(e.g. `libreoffice --headless --convert-to csv`, or pandas.read_excel(...).to_csv(..., index=False))"
        ) from None
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises several types for a bad file
        raise InputError(f"{dataset}: cannot read Excel file {str(path)!r}: {exc}") from None
    try:
        rows_iter = wb.worksheets[0].iter_rows(values_only=True)
        first = next(rows_iter, None) or ()
        header = ["" if v is None else str(v).strip() for v in first]
        rows = []
        for values in rows_iter:
            if values is None or all(v is None for v in values):
                continue
            rows.append({h: ("" if v is None else _cell_text(v)) for h, v in zip(header, values)})
    finally:
        wb.close()
    return header, rows


def _cell_text(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)       # repr keeps every digit of a float


def pick_columns(path: Path, header: Sequence[str], wanted: dict[str, Sequence[str]]) -> dict[str, str]:
    """Map each wanted key to the header's spelling of one of its accepted names (case-insensitive)."""
    lower = {h.lower(): h for h in header}
    out, missing = {}, []
    for key, names in wanted.items():
        hit = next((lower[n.lower()] for n in names if n.lower() in lower), None)
        if hit is None:
            missing.append(names[0])
        else:
            out[key] = hit
    if missing:
        need = ", ".join(n[0] for n in wanted.values())
        raise InputError(f"file {str(path)!r} needs columns {need}; missing {', '.join(missing)} "
                         f"(found: {', '.join(header) or 'no header'})")
    return out


def parse_score(raw: str, where: str, name: str = "mos") -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise InputError(f"{where}: {name} {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: {name} {raw!r} is not finite")
    return value


def missing_files_error(source: Path, root: Path, missing: list[str]) -> InputError:
    shown = ", ".join(map(repr, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return InputError(f"{_describe(source)} {str(source)!r} names {len(missing)} file(s) not found under root "
                      f"{str(root)!r}: {shown}")


def _describe(source: Path) -> str:
    return "csv file" if source.suffix.lower() == ".csv" else "file"


def check_unique(names: Iterable[str], source: Path) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise InputError(f"file {str(source)!r} lists image {n!r} twice")
        seen.add(n)


# --------------------------------------------------------------------------- MATLAB

def read_mat_variable(path: Path, name: str):
    """One variable of a MATLAB v4–v7.2 .mat file (scipy.io.loadmat)."""
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except NotImplementedError:
        raise InputError(f"MATLAB file {str(path)!r} is v7.3 (HDF5); re-save it with `save -v7` "
                         f"or read it with h5py") from None
    except Exception as exc:
        raise InputError(f"cannot read MATLAB file {str(path)!r}: {exc}") from None
    if name not in data:
        found = ", ".join(k for k in data if not k.startswith("__")) or "none"
        raise InputError(f"MATLAB file {str(path)!r} has no variable {name!r} (found: {found})")
    return data[name]


def mat_strings(value) -> list[str]:
    """A MATLAB cell array of strings (as loadmat returns it) as a flat list of str."""
    import numpy as np

    out = []
    for el in np.asarray(value, dtype=object).ravel(order="F"):
        while isinstance(el, np.ndarray):
            if el.size != 1:
                break
            el = el.reshape(-1)[0]
        out.append(str(el).strip())
    return out
