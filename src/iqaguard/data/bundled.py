"""The bundled suite: natural photos shipped inside our dependencies × synthetic distortions.

Needs no download and no network: the photos are files inside the scikit-image and matplotlib
wheels, read straight from disk (not through ``skimage.data``'s fetchers, which may reach for
pooch). Each photo is centre-cropped to a square and resized with Pillow's Lanczos filter
(antialiased) to ``size``×``size``; distortions come from :mod:`.distortions`.

Ground truth is minus the distortion level, comparable only within one (content, type) group,
so SROCC against it is computed per group. Items are ordered so that any prefix is a
representative sample: the levels of one group are consecutive, and groups go round-robin over
contents, each content starting at a different point of the type list.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import InputError
from ..images import to_tensor
from ..registry import DATASETS
from ..seeds import derive_seed
from .base import Dataset, Item
from .distortions import DISTORTIONS, jpeg2000_supported


def _skimage_file(name: str) -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent / name


def _matplotlib_file(name: str) -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / name


# name -> (package that ships it, file name): natural colour photographs only.
CONTENTS: dict[str, tuple[str, str]] = {
    "astronaut": ("scikit-image", "astronaut.png"),        # Eileen Collins, NASA (public domain)
    "chelsea": ("scikit-image", "chelsea.png"),            # a cat
    "coffee": ("scikit-image", "coffee.png"),              # a cup of coffee
    "rocket": ("scikit-image", "rocket.jpg"),              # SpaceX launch (public domain)
    "motorcycle": ("scikit-image", "motorcycle_left.png"), # Middlebury stereo, left view
    "grace_hopper": ("matplotlib", "grace_hopper.jpg"),    # portrait (public domain)
}

MAX_SIZE = 300   # the shortest side among the contents (chelsea): never upsample


def content_path(name: str) -> Path:
    package, file = CONTENTS[name]
    path = _skimage_file(file) if package == "scikit-image" else _matplotlib_file(file)
    if not path.is_file():
        raise InputError(f"bundled content {name!r}: {file} not found in the installed {package} ({path})")
    return path


@functools.lru_cache(maxsize=32)
def _pristine(name: str, size: int) -> torch.Tensor:
    with Image.open(content_path(name)) as img:
        img = ImageOps.fit(img.convert("RGB"), (size, size), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))
        return to_tensor(np.asarray(img))


def load_content(name: str, size: int = 256) -> torch.Tensor:
    """The pristine content, 1×3×size×size float32 on the 8-bit grid (a fresh copy)."""
    if name not in CONTENTS:
        raise InputError(f"unknown bundled content {name!r}; valid: {', '.join(CONTENTS)}")
    return _pristine(name, int(size)).clone()


def _distorted(content: str, size: int, dtype: str, level: int) -> torch.Tensor:
    if level == 0:
        return load_content(content, size)
    seed = derive_seed("bundled", content, dtype)      # one seed per group: levels are nested
    return DISTORTIONS[dtype](load_content(content, size), level, seed)


def _split(value) -> list[str]:
    """'a,b' or ['a', 'b'] (a spec value ``types=['a','b']`` parses to a list) -> ['a', 'b']."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [v.strip() for v in str(value).split(",") if v.strip()]


def _parse_list(value: str, valid: list[str], what: str) -> list[str]:
    if not isinstance(value, (str, list, tuple)):
        raise InputError(f"{what} must be a comma-separated string, got {type(value).__name__}")
    names = _split(value)
    if not names:
        return list(valid)
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise InputError(f"{what}: unknown {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise InputError(f"{what}: duplicate entries in {value!r}")
    return [n for n in valid if n in names]          # canonical order, whatever order was given


def _parse_levels(value: str) -> list[int]:
    """'1,3,5', [1, 3, 5] or 3 (a spec ``levels=3`` parses to an int) -> [1, 3, 5]."""
    if isinstance(value, bool) or not isinstance(value, (str, int, list, tuple)):
        raise InputError(f"levels must be a comma-separated string such as '1,2,3,4,5', got {type(value).__name__}")
    try:
        levels = sorted({int(v) for v in _split([value] if isinstance(value, int) else value)})
    except ValueError:
        raise InputError(f"levels must be integers 1..5 separated by commas, got {value!r}") from None
    if not levels or any(not 1 <= lv <= 5 for lv in levels):
        raise InputError(f"levels must be integers 1..5 separated by commas, got {value!r}")
    return levels


def group_order(contents: list[str], types: list[str]) -> list[tuple[str, str]]:
    """Every (content, type) pair once, round-robin over contents, types staggered per content."""
    nc, nt = len(contents), len(types)
    offsets = [(c * nt) // nc for c in range(nc)]
    return [(contents[c], types[(offsets[c] + r) % nt]) for r in range(nt) for c in range(nc)]


def default_types() -> list[str]:
    types = list(DISTORTIONS)
    if not jpeg2000_supported():
        warnings.warn("Pillow lacks JPEG 2000 support: the bundled suite leaves out 'jpeg2000'")
        types.remove("jpeg2000")
    return types


@DATASETS.register("bundled")
class BundledDataset(Dataset):
    """Photos from scikit-image and matplotlib × KADID-style distortions × 5 levels; truth = -level."""

    def __init__(self, size: int = 256, types: str = "", levels: str = "1,2,3,4,5", contents: str = "",
                 include_pristine: bool = False):
        """``types``/``contents``: comma-separated subsets (empty = all); ``levels``: e.g. '1,3,5'."""
        if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= MAX_SIZE:
            raise InputError(f"size must be an int in 16..{MAX_SIZE} (pixels), got {size!r}")
        if not isinstance(include_pristine, bool):
            raise InputError(f"include_pristine must be a bool, got {include_pristine!r}")
        type_list = _parse_list(types, list(DISTORTIONS), "types")
        if not _split(types):
            type_list = default_types()
        content_list = _parse_list(contents, list(CONTENTS), "contents")
        level_list = _parse_levels(levels)
        if include_pristine:
            level_list = [0] + level_list
        for c in content_list:
            content_path(c)                              # fail now, not at the first load
        self.name = "bundled"
        self.params = {"size": size, "types": types, "levels": levels, "contents": contents,
                       "include_pristine": include_pristine}
        self.size = size
        self.types = type_list
        self.contents = content_list
        self.levels = level_list
        items = []
        for content, dtype in group_order(content_list, type_list):
            ref = functools.partial(load_content, content, size)
            for level in level_list:
                items.append(Item(
                    id=f"{content}/{dtype}/{level}",
                    load=functools.partial(_distorted, content, size, dtype, level),
                    load_ref=ref,
                    truth=float(-level),
                    group=f"{content}/{dtype}",
                    truth_kind="level",
                ))
        super().__init__(items)
