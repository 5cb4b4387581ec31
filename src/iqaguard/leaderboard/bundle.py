"""Evidence bundles: a zip next to each entry with what ``iqaguard verify`` needs.

Members: ``manifest.json`` (suite, command, seed, images, SHA-256 of every adversarial PNG, probes,
attack metadata, strip index), ``rows.json`` (the per-image rows) and ``strip/*.png`` (clean /
attacked / defended images of the first image, for the board's image strip). A bundle is checked
before anything in it is used: its size, member names and sizes (no paths outside the bundle, no
zip bombs), JSON validity and the manifest schema; every failure is one line naming the bundle.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from ..errors import InputError
from .schema import check

FORMAT = "iqaguard-evidence/1"
MAX_BUNDLE_BYTES = 20_000_000          # compressed file
MAX_MEMBER_BYTES = 50_000_000          # any one member, uncompressed
MAX_TOTAL_BYTES = 100_000_000          # all members, uncompressed
MAX_RATIO = 200                        # uncompressed / compressed, per member
MAX_MEMBERS = 200
MEMBER = re.compile(r"^(manifest\.json|rows\.json|strip/[A-Za-z0-9_-]{1,80}\.png)$")
# columns that hold text; every other column holds numbers (infinities as "inf"/"-inf")
TEXT_COLUMNS = {"cell", "run_id", "metric", "attack", "defense", "dataset", "image", "family", "truth_kind",
                "group", "adaptive_wrapper"}
ROW_REQUIRED = ("metric", "attack", "defense", "image", "clear", "attacked", "defended_clear", "defended_attacked",
                "range_lo", "range_hi", "lower_better")


def write_bundle(path: Path, manifest: dict[str, Any], rows: list[dict[str, Any]], pngs: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for name, text in (("manifest.json", json.dumps(manifest, indent=1, allow_nan=False)),
                           ("rows.json", json.dumps(rows, allow_nan=False))):
            z.writestr(_info(name), text.encode("utf-8"))
        for name, data in sorted(pngs.items()):
            z.writestr(_info(name), data, compress_type=zipfile.ZIP_STORED)
    tmp.replace(path)
    return path


def _info(name: str) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))   # fixed date: same content, same bytes
    zi.compress_type = zipfile.ZIP_DEFLATED
    return zi


class Bundle:
    def __init__(self, path: Path, manifest: dict[str, Any], rows: list[dict[str, Any]], pngs: dict[str, bytes]):
        self.path, self.manifest, self.rows, self.pngs = path, manifest, rows, pngs


def read_bundle(path: str | Path) -> Bundle:
    """Open and validate a bundle; InputError ``bundle <path>: <problem>`` on anything wrong."""
    path = Path(path)
    where = f"bundle {str(path)!r}"
    try:
        size = path.stat().st_size
    except OSError:
        raise InputError(f"{where}: does not exist") from None
    if size > MAX_BUNDLE_BYTES:
        raise InputError(f"{where}: {size} bytes, more than the {MAX_BUNDLE_BYTES} allowed")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{where}: not a zip file")
    try:
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS:
                raise InputError(f"{where}: {len(infos)} members, more than the {MAX_MEMBERS} allowed")
            total = 0
            for zi in infos:
                if not MEMBER.match(zi.filename):
                    raise InputError(f"{where}: unexpected member {zi.filename[:80]!r}")
                if zi.file_size > MAX_MEMBER_BYTES or (zi.compress_size and zi.file_size / zi.compress_size > MAX_RATIO
                                                        and zi.file_size > 1_000_000):
                    raise InputError(f"{where}: member {zi.filename!r} is oversized ({zi.file_size} bytes)")
                total += zi.file_size
            if total > MAX_TOTAL_BYTES:
                raise InputError(f"{where}: {total} bytes uncompressed, more than the {MAX_TOTAL_BYTES} allowed")
            names = {zi.filename for zi in infos}
            for need in ("manifest.json", "rows.json"):
                if need not in names:
                    raise InputError(f"{where}: missing {need}")
            data = {zi.filename: _read(z, zi, where) for zi in infos}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise InputError(f"{where}: corrupt zip ({exc})") from None
    manifest = _json(data["manifest.json"], where, "manifest.json")
    check(manifest, "manifest", f"{where} manifest.json")
    rows = _json(data["rows.json"], where, "rows.json")
    _check_rows(rows, where)
    pngs = {k: v for k, v in data.items() if k.startswith("strip/")}
    for k, v in pngs.items():
        if not v.startswith(b"\x89PNG\r\n\x1a\n"):
            raise InputError(f"{where}: member {k!r} is not a PNG")
    return Bundle(path, manifest, rows, pngs)


def _read(z: zipfile.ZipFile, zi: zipfile.ZipInfo, where: str) -> bytes:
    """Read at most the declared size (+1 byte to detect a lying header)."""
    with z.open(zi) as f:
        data = f.read(zi.file_size + 1)
    if len(data) != zi.file_size:
        raise InputError(f"{where}: member {zi.filename!r} does not match its declared size")
    return data


def _json(raw: bytes, where: str, name: str) -> Any:
    def no_constant(c):
        raise ValueError(f"{c} is not a JSON number")
    try:
        return json.load(io.BytesIO(raw), parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: {name} is not valid JSON ({exc})") from None


def _check_rows(rows: Any, where: str) -> None:
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{where}: rows.json must be a non-empty list of rows")
    for i, r in enumerate(rows):
        if not isinstance(r, dict):
            raise InputError(f"{where}: rows.json[{i}] is not an object")
        for k in ROW_REQUIRED:
            if k not in r:
                raise InputError(f"{where}: rows.json[{i}].{k} is missing")
        for k, v in r.items():
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise InputError(f"{where}: rows.json[{i}].{k} must be a string, number, boolean or null")
            if isinstance(v, str) and k not in TEXT_COLUMNS and v not in ("inf", "-inf"):
                raise InputError(f"{where}: rows.json[{i}].{k} must be a number, \"inf\", \"-inf\" or null")
