"""JSON Schema validation with one-line errors that name the file and the field."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from ..errors import InputError

SCHEMAS = ("entry", "suite", "manifest")


@lru_cache(maxsize=None)
def schema(kind: str) -> dict[str, Any]:
    return json.loads(resources.files("iqaguard.leaderboard").joinpath("schemas", f"{kind}.schema.json").read_text("utf-8"))


@lru_cache(maxsize=None)
def _validator(kind: str):
    import jsonschema

    s = schema(kind)
    cls = jsonschema.validators.validator_for(s)
    cls.check_schema(s)
    return cls(s, format_checker=cls.FORMAT_CHECKER)


def field_path(path) -> str:
    """jsonschema's error path as ``attacks[0].scores.bias.value`` ('(top level)' when empty)."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def check(data: Any, kind: str, source: str) -> None:
    """Raise InputError ``<source>: <field>: <message>`` for the first (most relevant) violation."""
    import jsonschema

    err = jsonschema.exceptions.best_match(_validator(kind).iter_errors(data))
    if err is not None:
        msg = err.message if len(err.message) <= 200 else err.message[:197] + "..."
        raise InputError(f"{source}: {field_path(err.absolute_path)}: {msg}")
