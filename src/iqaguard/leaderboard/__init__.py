"""The leaderboard: suites and entries as data, ``submit`` / ``verify`` / ``build``.

A *suite* (``suites/*.json``) fixes everything a number depends on; an *entry* is one defense ×
metric × suite (JSON, validated by ``schemas/entry.schema.json``) with an evidence bundle next to it;
``verify`` recomputes a sample from the bundle; ``build`` renders a static site from entries only.
"""
from .entries import load_entries, validate_entry
from .suites import load_suite

__all__ = ["load_suite", "load_entries", "validate_entry"]
