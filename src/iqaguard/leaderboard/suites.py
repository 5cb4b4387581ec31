"""Leaderboard suites: JSON files in the package, identified by a content hash.

The hash is the SHA-256 of the suite's canonical JSON (sorted keys, no whitespace, UTF-8), so two
entries are comparable exactly when their suite hashes are equal.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import InputError
from .schema import check

SUITES = ("quick", "standard")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_hash(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Suite:
    data: dict[str, Any]
    source: str

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def hash(self) -> str:
        return content_hash(self.data)

    @property
    def attacks(self) -> list[str]:
        return [a["spec"] for a in self.data["attacks"]]

    def budget(self, attack_spec: str) -> str:
        """The budget label of an attack, matched on the canonical spec."""
        from ..registry import ATTACKS, canonical

        want = canonical(ATTACKS.create(attack_spec))
        for a in self.data["attacks"]:
            if canonical(ATTACKS.create(a["spec"])) == want:
                return a["budget"]
        return ""

    def run_kwargs(self) -> dict[str, Any]:
        """Arguments of ``run_benchmark`` (besides defenses, out and device) that this suite fixes."""
        d = self.data
        return {"metrics": list(d["metrics"]), "attacks": self.attacks, "dataset": d["dataset"],
                "limit": d["limit"], "seed": d["seed"], "batch_size": d["batch_size"],
                "adaptive": bool(d["adaptive"]["enabled"]), "wrapper": d["adaptive"]["wrapper"],
                "eot_k": d["adaptive"]["eot_k"], "train_images": d["train_images"], "cert_eps": d["cert_eps"]}


def suite_from_data(data: Any, source: str) -> Suite:
    check(data, "suite", source)
    return Suite(data, source)


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name (``quick``, ``standard``) or a suite JSON file by path."""
    text = str(name_or_path)
    if text in SUITES:
        source = f"suite {text!r}"
        raw = resources.files("iqaguard.leaderboard").joinpath("suites", f"{text}.json").read_text("utf-8")
    else:
        p = Path(text)
        if not p.is_file():
            raise InputError(f"suite {text!r} is neither one of {', '.join(SUITES)} nor a JSON file")
        source, raw = str(p), p.read_text("utf-8")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"{source}: not valid JSON ({exc})") from None
    return suite_from_data(data, source)
