"""The Dataset contract: a list of items, each an image with optional reference and ground truth.

``truth`` is the quality ground truth, higher = better: MOS when the dataset has one, otherwise a
stand-in (for the bundled suite: minus the distortion level). ``group`` names the set within which
``truth`` is comparable (bundled: content × distortion type; datasets with MOS: one group), so
SROCC is computed per group and averaged.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..errors import InputError


@dataclass(frozen=True)
class Item:
    id: str                                   # unique within the dataset, stable across runs
    load: Callable[[], torch.Tensor]          # -> 1×3×H×W float32 in [0,1]
    load_ref: Callable[[], torch.Tensor] | None = None
    truth: float | None = None
    group: str = "all"
    truth_kind: str = "mos"                   # "mos" | "level"


class Dataset:
    name: str = ""
    params: dict = {}

    def __init__(self, items: Sequence[Item]):
        ids = [it.id for it in items]
        if len(set(ids)) != len(ids):
            raise InputError(f"dataset {self.name!r} has duplicate image ids")
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Item:
        return self.items[i]

    def subset(self, limit: int | None) -> "Dataset":
        """First ``limit`` items in the dataset's own (deterministic, representative) order."""
        if limit is None or limit >= len(self.items):
            return self
        if limit < 1:
            raise InputError(f"limit must be >= 1, got {limit}")
        out = Dataset.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.items = self.items[:limit]
        return out

    @property
    def has_ref(self) -> bool:
        return all(it.load_ref is not None for it in self.items)


def item_sources(item: Item) -> list[Path]:
    """The files an item is read from: the path arguments of its loaders when they are
    ``functools.partial(loader, path)`` (folder and published datasets); [] for generated items."""
    out = []
    for load in (item.load, item.load_ref):
        if isinstance(load, functools.partial):
            out += [Path(a) for a in load.args if isinstance(a, os.PathLike)]
    return out


_DIGESTS: dict[tuple[str, int, int], str] = {}


def content_digest(item: Item) -> str:
    """Short sha256 of the bytes of an item's files (cached per path, mtime and size); '' when
    the item is generated (its content is fixed by the package version)."""
    h = hashlib.sha256()
    files = item_sources(item)
    for f in files:
        try:
            st = f.stat()
            key = (str(f), st.st_mtime_ns, st.st_size)
            if key not in _DIGESTS:
                fh = hashlib.sha256()
                with open(f, "rb") as fp:
                    for chunk in iter(lambda: fp.read(1 << 20), b""):
                        fh.update(chunk)
                _DIGESTS[key] = fh.hexdigest()
            h.update(_DIGESTS[key].encode())
        except OSError:   # unreadable: loading the image fails its cells with the real message
            h.update(f"unreadable:{f}".encode())
    return h.hexdigest()[:16] if files else ""
