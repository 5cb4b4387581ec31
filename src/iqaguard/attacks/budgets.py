"""Named attack budgets (``low``/``medium``/``high``) read from ``tables/attack_budgets.json``.

Budgets are data, not code (docs/methods.md): each entry is the parameter dict that, passed to
``ATTACKS.create``, gives the attack at that strength. Besides the three levels an entry may say
which parameter is the budget (``"param"``), by which rule its values were chosen (``"rule"``,
one of :data:`RULES`) and what the calibration measured (``"calibration"``: per level the
target and the achieved median SSIM/PSNR/ℓ∞); :func:`budget_info` reads those, and
:mod:`.calibration` (``iqaguard calibrate-budgets``) recomputes them.
"""
from __future__ import annotations

import copy
import json
import math
from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import InputError
from ..spec import Spec, format_spec, parse_spec

LEVELS = ("low", "medium", "high")

#: How the values of a budget were chosen:
#: ``linf`` — eps set to the study's ℓ∞ levels 2, 4, 8 /255 (no search);
#: ``ssim`` — parameter searched so the median SSIM (luma) clean vs attacked equals that of
#: ``ifgsm`` at 2, 4, 8 /255 on the calibration set;
#: ``psnr`` — same with PSNR (luma), for attacks whose SSIM is degenerate;
#: ``ssim_rgb`` — median RGB SSIM matched to fixed targets (cadv: the study's 0.9 / 0.85 / 0.75);
#: ``fixed`` — values set by hand (documented in the table's ``_source``), only measured.
RULES = ("linf", "ssim", "psnr", "ssim_rgb", "fixed")

#: Budget parameter of attacks whose entry does not name one (the ℓ∞/ℓ2 gradient attacks).
DEFAULT_PARAM = "eps"


def _load() -> dict[str, Any]:
    text = resources.files("iqaguard.tables").joinpath("attack_budgets.json").read_text()
    return json.loads(text)


@lru_cache(maxsize=1)
def _raw_table() -> dict[str, dict[str, Any]]:
    return {k: v for k, v in _load().items() if not k.startswith("_")}


@lru_cache(maxsize=1)
def budget_table() -> dict[str, dict[str, dict[str, Any]]]:
    """Attack key (name, or canonical spec such as ``pgd:norm=l2``) -> level -> params."""
    return {k: {lv: p for lv, p in v.items() if lv in LEVELS} for k, v in _raw_table().items()}


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


def budget_param_name(entry: dict[str, Any]) -> str:
    """The budget parameter of a table entry: its ``"param"``, else the one numeric parameter
    whose value changes across levels, else ``eps``."""
    if "param" in entry:
        return str(entry["param"])
    levels = [entry[lv] for lv in LEVELS if isinstance(entry.get(lv), dict)]
    varying = sorted({k for p in levels for k in p if len({json.dumps(q.get(k)) for q in levels}) > 1})
    return varying[0] if len(varying) == 1 else DEFAULT_PARAM


def budget_info(attack_name: str | Spec) -> dict[str, Any]:
    """``{"param", "rule", "values": {level: value}, "calibration": {...} or {}}`` of an attack."""
    key = _key(attack_name)
    raw = _raw_table()
    if key not in raw:
        raise InputError(
            f"attack {str(attack_name)!r} has no budget presets; presets exist for {', '.join(sorted(raw))}")
    entry = raw[key]
    param = budget_param_name(entry)
    return {"key": key, "param": param, "rule": entry.get("rule", "fixed"),
            "values": {lv: entry[lv].get(param) for lv in LEVELS if lv in entry},
            "calibration": copy.deepcopy(entry.get("calibration", {}))}


def validate_table(table: dict[str, Any]) -> None:
    """Raise InputError unless ``table`` is a valid budget table: every entry has the three
    levels as parameter dicts, a known rule, a numeric budget parameter strictly increasing from
    low to high (every budget parameter of the registered attacks grows the distortion), and
    — for the ``ssim`` / ``psnr`` rules — the achieved SSIM / PSNR not increasing (other rules'
    measurements need not be monotone: cadv's distortion is set by its initial hints, not its lr)."""
    if not isinstance(table, dict):
        raise InputError(f"budget table must be a JSON object, got {type(table).__name__}")
    for key, entry in table.items():
        if key.startswith("_"):
            continue
        if not isinstance(entry, dict):
            raise InputError(f"budget entry {key!r} must be an object")
        missing = [lv for lv in LEVELS if not isinstance(entry.get(lv), dict)]
        if missing:
            raise InputError(f"budget entry {key!r} lacks level(s) {', '.join(missing)}")
        if entry.get("rule", "fixed") not in RULES:
            raise InputError(f"budget entry {key!r}: rule must be one of {', '.join(RULES)}, got {entry['rule']!r}")
        param = budget_param_name(entry)
        values = [entry[lv].get(param) for lv in LEVELS]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in values):
            raise InputError(f"budget entry {key!r}: {param} must be a finite number at every level, got {values}")
        if not values[0] < values[1] < values[2]:
            raise InputError(f"budget entry {key!r}: {param} must increase from low to high, got {values}")
        cal = entry.get("calibration") or {}
        for field, tol in (("ssim", 1e-4), ("psnr", 0.05), ("ssim_rgb", 1e-4)):
            if entry.get("rule") != field:      # only the calibrated quantity must be monotone
                continue
            got = [cal.get(lv, {}).get(field) for lv in LEVELS]
            if all(isinstance(g, (int, float)) for g in got) and (got[1] > got[0] + tol or got[2] > got[1] + tol):
                raise InputError(f"budget entry {key!r}: achieved {field} {got} does not fall from low to high")
