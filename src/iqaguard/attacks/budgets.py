"""Named attack budgets (``low``/``medium``/``high``) read from ``tables/attack_budgets.json``.

Budgets are data, not code (CATALOG.md): each entry is the parameter dict that, passed to
``ATTACKS.create``, gives the attack at that strength.
"""
from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import InputError
from ..spec import Spec, format_spec, parse_spec

LEVELS = ("low", "medium", "high")


@lru_cache(maxsize=1)
def budget_table() -> dict[str, dict[str, dict[str, Any]]]:
    """Attack key (name, or canonical spec such as ``pgd:norm=l2``) -> level -> params."""
    text = resources.files("iqaguard.tables").joinpath("attack_budgets.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def _key(attack_name: str | Spec) -> str:
    """Canonical table key: parameters equal to the attack's defaults are dropped, so
    ``pgd:norm=linf`` and ``pgd`` share the entry ``pgd``."""
    spec = attack_name if isinstance(attack_name, Spec) else parse_spec(attack_name)
    params = dict(spec.params)
    if params:
        from ..registry import ATTACKS  # lazy: the registry is filled when attacks are imported

        try:
            defaults = ATTACKS.defaults(spec.name)
        except InputError:
            defaults = {}
        params = {k: v for k, v in params.items() if k not in defaults or defaults[k] != v}
    return format_spec(spec.name, params)


def budget_params(attack_name: str | Spec, level: str) -> dict[str, Any]:
    """Parameters of ``attack_name`` at budget ``level`` (``low``, ``medium`` or ``high``).

    ``attack_name`` is a registry name or a spec naming a variant, e.g. ``"pgd:norm=l2"``.
    Raises InputError for an attack without presets or an unknown level.
    """
    if level not in LEVELS:
        raise InputError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    table = budget_table()
    key = _key(attack_name)
    if key not in table:
        raise InputError(
            f"attack {str(attack_name)!r} has no budget presets; presets exist for {', '.join(sorted(table))}")
    if level not in table[key]:
        raise InputError(f"attack {key!r} has no {level!r} budget; it has {', '.join(sorted(table[key]))}")
    return copy.deepcopy(table[key][level])
