"""Spec strings: ``name:key=value,key=value`` — a configured method as text.

The canonical form (sorted keys, every parameter, shortest float repr) is the identity of a
configured method in the store, so two spellings of the same configuration share cached cells.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from .errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+\-]*(:[A-Za-z0-9_][A-Za-z0-9_.+\-]*)?$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Spec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return format_spec(self.name, self.params)


def parse_value(text: str) -> Any:
    """Parse a spec value: numbers (``8/255`` allowed), booleans, None, quoted or bare strings."""
    t = text.strip()
    if t == "":
        raise InputError(f"empty value in spec")
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    if re.fullmatch(r"[-+]?\d+(\.\d*)?\s*/\s*\d+(\.\d*)?", t):
        num, den = (Fraction(p.strip()) for p in t.split("/"))
        if den == 0:
            raise InputError(f"division by zero in spec value {text!r}")
        return float(num / den)
    try:
        value = ast.literal_eval(t)
    except (ValueError, SyntaxError):
        return t
    if isinstance(value, (int, float, str, bool, tuple, list)):
        return value
    return t


def parse_spec(text: str) -> Spec:
    """``"jpeg:quality=50"`` -> ``Spec("jpeg", {"quality": 50})``; raises InputError if malformed.

    A name may itself contain one colon-free prefix such as ``pyiqa:maniqa``; parameters follow
    the *last* colon only when that part contains ``=``.
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"spec must be a non-empty string, got {text!r}")
    text = text.strip()
    name, params_text = text, ""
    for m in re.finditer(":", text):
        if re.match(r"\s*[A-Za-z_][A-Za-z0-9_]*\s*=", text[m.end():]):
            name, params_text = text[:m.start()], text[m.end():]
            break
    if not _NAME.match(name):
        raise InputError(f"malformed spec {text!r}: bad method name {name!r}")
    params: dict[str, Any] = {}
    if params_text:
        for item in _split_items(params_text, text):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not _KEY.match(key):
                raise InputError(f"malformed spec {text!r}: expected key=value, got {item!r}")
            if key in params:
                raise InputError(f"malformed spec {text!r}: parameter {key!r} given twice")
            params[key] = parse_value(value)
    return Spec(name, params)


def _split_items(body: str, whole: str) -> list[str]:
    """Split on commas outside quotes and brackets."""
    items, depth, quote, cur = [], 0, "", []
    for ch in body:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if quote or depth:
        raise InputError(f"malformed spec {whole!r}: unbalanced quotes or brackets")
    items.append("".join(cur))
    return items


def format_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if value is not None else "none"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return repr(tuple(value)).replace(" ", "")
    text = str(value)
    if isinstance(value, str) and (re.search(r"[,=:\s'\"]", text) or text == "" or parse_value(text) != text):
        return repr(text)  # quoted so it parses back as the same string
    return text


def format_spec(name: str, params: dict[str, Any]) -> str:
    """Canonical text: sorted keys, shortest float repr."""
    if not params:
        return name
    body = ",".join(f"{k}={format_value(params[k])}" for k in sorted(params))
    return f"{name}:{body}"
