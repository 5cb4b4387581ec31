"""Expand a benchmark spec into cells, validating every method before anything runs.

A *cell* is (metric, attack, defense, image); its key hashes the canonical specs, the dataset,
the image id, the run seed and the code version, so a rerun of the same spec finds its cells.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from .._version import __version__
from ..errors import InputError
from ..registry import ATTACKS, DATASETS, DEFENSES, METRICS, canonical

# The quick suite: what `iqaguard run` / `make run` does with no flags. Cheap enough for a
# 2-core laptop in a few minutes, and it shows the physics (an attack that moves the score, and
# defenses that do and do not undo it).
QUICK = {
    "metrics": ["niqe", "iqg-cnn"],   # a classic NSS metric and a shipped learned one
    # NIQE is noise-sensitive: with the study's 1/255 sign steps I-FGSM's own sign noise cancels
    # most of its gain; a 0.25/255 step at the medium budget (4/255) moves NIQE clearly (docs/methods.md)
    "attacks": ["ifgsm:eps=4/255,alpha=0.25/255", "pgd:norm=l2,eps=1.0"],
    # resize at 0.75: NIQE needs >= 192 px and the bundled photos are 256 px
    "defenses": ["no-defense", "jpeg:quality=50", "gaussian-blur", "median-blur", "resize:scale=0.75",
                 "upscale", "color-quantization", "random-noise"],
    "dataset": "bundled",
    "limit": 60,
}

CODE_VERSION = __version__


def _hash(*parts: Any) -> str:
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]


@dataclass
class Plan:
    metrics: list[str]
    attacks: list[str]
    defenses: list[str]
    dataset: str
    image_ids: list[str]
    seed: int
    limit: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def cell_key(self, metric: str, attack: str, defense: str, image: str) -> str:
        return _hash("cell", metric, attack, defense, self.dataset, image, self.seed, CODE_VERSION)

    def attack_key(self, metric: str, attack: str, image: str) -> str:
        """Key of an adversarial image: shared by every defense of the same (metric, attack)."""
        return _hash("adv", metric, attack, self.dataset, image, self.seed, CODE_VERSION)

    def cells(self):
        for m in self.metrics:
            for a in self.attacks:
                for d in self.defenses:
                    for img in self.image_ids:
                        yield m, a, d, img, self.cell_key(m, a, d, img)

    def __len__(self) -> int:
        return len(self.metrics) * len(self.attacks) * len(self.defenses) * len(self.image_ids)

    def as_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "attacks": self.attacks, "defenses": self.defenses,
                "dataset": self.dataset, "limit": self.limit, "seed": self.seed,
                "images": len(self.image_ids), "code_version": CODE_VERSION, **self.extra}


def _canon(registry, specs: Sequence[str], what: str) -> list[str]:
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise InputError(f"no {what} given")
    out: list[str] = []
    for s in specs:
        c = canonical(registry.create(s))
        if c not in out:
            out.append(c)
    return out


def make_plan(metrics=None, attacks=None, defenses=None, dataset: str | None = None,
              limit: int | None = None, seed: int = 0) -> tuple[Plan, Any]:
    """Validate and canonicalise a spec; returns the plan and the (subset) dataset object."""
    quick = metrics is None and attacks is None and defenses is None and dataset is None
    metrics = QUICK["metrics"] if metrics is None else metrics
    attacks = QUICK["attacks"] if attacks is None else attacks
    defenses = QUICK["defenses"] if defenses is None else defenses
    dataset = QUICK["dataset"] if dataset is None else dataset
    if limit is None and quick:
        limit = QUICK["limit"]
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, got {seed!r}")
    m = _canon(METRICS, metrics, "metrics")
    a = _canon(ATTACKS, attacks, "attacks")
    d = _canon(DEFENSES, defenses, "defenses")
    ds_obj = DATASETS.create(dataset)
    ds_spec = canonical(ds_obj)
    ds_obj = ds_obj.subset(limit)
    if len(ds_obj) == 0:
        raise InputError(f"dataset {dataset!r} has no images")
    plan = Plan(m, a, d, ds_spec, [it.id for it in ds_obj.items], seed, limit,
                extra={"suite": "quick" if quick else "custom"})
    return plan, ds_obj
