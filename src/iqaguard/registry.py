"""One registry per kind (metric, attack, defense, dataset).

Filled by the ``@register`` decorators in the package and by Python entry points
(``iqaguard.metrics`` …) so a third party ships a method as a pip package. ``create`` binds the
parameters to the constructor's signature, which gives every method its defaults, a ``params``
dict that round-trips, and a clear error for an unknown name or parameter.
"""
from __future__ import annotations

import contextlib
import difflib
import fnmatch
import importlib.metadata
import inspect
from typing import Any, Callable

from .errors import InputError
from .spec import Spec, format_spec, parse_spec


class Registry:
    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._factories: dict[str, Callable[..., Any]] = {}
        self._entry_points_loaded = False

    def register(self, name: str, factory: Callable[..., Any] | None = None):
        """Register ``factory`` under ``name``; usable as a decorator."""

        def add(obj):
            if name in self._factories and self._factories[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = obj
            return obj

        return add(factory) if factory is not None else add

    def unregister(self, name: str) -> None:
        """Remove ``name`` (KeyError if it is not registered)."""
        del self._factories[name]

    @contextlib.contextmanager
    def registered(self, name: str, factory: Callable[..., Any]):
        """Register ``factory`` as ``name`` for the ``with`` block only: a notebook's or a test's
        method that must not outlive it (later listings never see it)."""
        self.register(name, factory)
        try:
            yield factory
        finally:
            self._factories.pop(name, None)

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in importlib.metadata.entry_points(group=self.group):
            if ep.name in self._factories:
                continue
            try:
                self._factories[ep.name] = ep.load()
            except Exception as exc:  # a broken plugin must not break the package
                import warnings

                warnings.warn(f"could not load {self.kind} plugin {ep.name!r} ({ep.value}): {exc}")

    def refresh(self) -> None:
        """Look for entry points again (after a plugin was installed at run time)."""
        self._entry_points_loaded = False
        self._load_entry_points()

    def names(self, pattern: str | None = None) -> list[str]:
        self._load_entry_points()
        names = sorted(self._factories)
        for prefix, lister in _PREFIX_LISTERS.get(self.kind, {}).items():
            names += sorted(f"{prefix}:{n}" for n in lister())
        if pattern:
            names = [n for n in names if fnmatch.fnmatch(n, pattern)]
        return names

    def factory(self, name: str) -> Callable[..., Any]:
        self._load_entry_points()
        if name in self._factories:
            return self._factories[name]
        for prefix, resolver in _PREFIX_RESOLVERS.get(self.kind, {}).items():
            if name.startswith(prefix + ":"):
                return resolver(name[len(prefix) + 1:])
        close = difflib.get_close_matches(name, list(self._factories), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; see `iqaguard list {self.kind}s`"
        raise InputError(f"unknown {self.kind} {name!r}{hint}")

    def defaults(self, name: str) -> dict[str, Any]:
        return bind_params(self.factory(name), {}, f"{self.kind} {name!r}")

    def create(self, spec: str | Spec, /, **params: Any):
        """Build a method from a name or spec string plus keyword overrides."""
        parsed = spec if isinstance(spec, Spec) else parse_spec(spec)
        merged = {**parsed.params, **params}
        factory = self.factory(parsed.name)
        bound = bind_params(factory, merged, f"{self.kind} {parsed.name!r}")
        obj = factory(**bound)
        obj.name = parsed.name
        obj.params = bound
        return obj


def bind_params(factory: Callable[..., Any], params: dict[str, Any], what: str) -> dict[str, Any]:
    """Complete ``params`` with the factory's defaults; unknown names raise InputError."""
    sig = inspect.signature(factory)
    accepted = {
        k: p for k, p in sig.parameters.items()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and k != "self"
    }
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InputError(
            f"{what} has no parameter {', '.join(map(repr, unknown))}; "
            f"parameters: {', '.join(accepted) or '(none)'}"
        )
    out: dict[str, Any] = {}
    for key, p in accepted.items():
        if key in params:
            out[key] = params[key]
        elif p.default is not inspect.Parameter.empty:
            out[key] = p.default
        else:
            raise InputError(f"{what} needs parameter {key!r}")
    return out


def canonical(obj: Any) -> str:
    """Canonical spec string of a created method (its identity in the store)."""
    return format_spec(obj.name, {k: v for k, v in obj.params.items() if _storable(v)})


def short_spec(registry: "Registry", spec: str) -> str:
    """Display form of a canonical spec: only the parameters that differ from the defaults."""
    try:
        parsed = parse_spec(spec)
        defaults = registry.defaults(parsed.name)
    except InputError:
        return spec
    return format_spec(parsed.name, {k: v for k, v in parsed.params.items() if defaults.get(k, object()) != v})


def _storable(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, tuple, list)) or value is None


# Names with a prefix (``pyiqa:maniqa``) are resolved by a function instead of the table.
_PREFIX_RESOLVERS: dict[str, dict[str, Callable[[str], Callable[..., Any]]]] = {}
# Optional: what a prefix offers, for ``names()`` (e.g. every pyiqa metric when pyiqa is installed).
_PREFIX_LISTERS: dict[str, dict[str, Callable[[], list[str]]]] = {}


def register_prefix(kind: str, prefix: str, resolver: Callable[[str], Callable[..., Any]],
                    lister: Callable[[], list[str]] | None = None) -> None:
    _PREFIX_RESOLVERS.setdefault(kind, {})[prefix] = resolver
    if lister is not None:
        _PREFIX_LISTERS.setdefault(kind, {})[prefix] = lister


METRICS = Registry("metric", "iqaguard.metrics")
ATTACKS = Registry("attack", "iqaguard.attacks")
DEFENSES = Registry("defense", "iqaguard.defenses")
DATASETS = Registry("dataset", "iqaguard.datasets")
