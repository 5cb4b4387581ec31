"""The study's five presets (0..4) per parameterised defense, from ``tables/defense_presets.json``.

A preset is a dict of constructor parameters, so ``DEFENSES.create(name, **preset_params(name, i))``
builds that preset; defenses without presets have one: ``{}`` (their defaults).
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from numbers import Integral
from typing import Any

from ..errors import InputError
from ..registry import DEFENSES

N_PRESETS = 5


@lru_cache(maxsize=1)
def preset_table() -> dict[str, dict[str, Any]]:
    """Defense name -> {"parameter", "default", "presets"} (the ``_source`` note left out)."""
    text = resources.files("iqaguard.tables").joinpath("defense_presets.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def _known(name: str) -> bool:
    return name in preset_table() or name in DEFENSES.names()


def presets(defense_name: str) -> list[dict[str, Any]]:
    """All presets of a defense, in order 0..4; ``[{}]`` for a defense without presets."""
    table = preset_table()
    if defense_name in table:
        e = table[defense_name]
        return [{e["parameter"]: v} for v in e["presets"]]
    if not _known(defense_name):
        raise InputError(f"defense_name {defense_name!r} is not a known defense")
    return [{}]


def preset_params(defense_name: str, index: int) -> dict[str, Any]:
    """Constructor parameters of preset ``index`` (0..4) of a defense."""
    all_presets = presets(defense_name)
    if isinstance(index, bool) or not isinstance(index, Integral) or not 0 <= index < len(all_presets):
        raise InputError(
            f"index must be an integer in 0..{len(all_presets) - 1} for defense {defense_name!r}, got {index!r}")
    return dict(all_presets[index])
