"""Seed derivation: every random draw comes from (run seed, cell key, image id).

Hashing instead of sequential draws makes results independent of batching and scheduling order,
and bit-identical when rerun on the same device.
"""
from __future__ import annotations

import hashlib


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (converted with ``str``)."""
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)
