"""Expand a benchmark spec into cells, validating every method before anything runs.

A *cell* is (metric, attack, defense, image); its key hashes the canonical specs, the dataset,
the image id, the run seed and the code version, so a rerun of the same spec finds its cells.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Sequence

from .._version import __version__
from ..adaptive import DEFAULT_EOT_K, WRAPPERS
from ..errors import InputError
from ..data.base import content_digest
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
    "limit": 16,
    # every defended cell gets its adaptive column (direct white-box, BPDA or EOT; docs/methods/scores.md);
    # an adaptive attack costs one attack per defense (EOT: k), hence k = 4 draws in the quick suite
    "adaptive": True,
    "eot_k": 4,
}
DEFAULT_TRAIN_IMAGES = 32
DEFAULT_CERT_EPS = 0.25       # ℓ2 radius (pixels in [0,1]) certified by certified defenses

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
    adaptive: list[str] = field(default_factory=list)      # defenses that get the adaptive column
    wrapper: str = "auto"
    eot_k: int = DEFAULT_EOT_K
    train_images: int = DEFAULT_TRAIN_IMAGES
    white_box: dict[str, bool] = field(default_factory=dict)    # attack spec -> white-box?
    trainable: dict[str, bool] = field(default_factory=dict)    # attack spec -> needs fit?
    wrappers: dict[str, str] = field(default_factory=dict)      # adaptive defense -> wrapper string
    train_items: list[Any] = field(default_factory=list, repr=False)
    adaptive_limit: int | None = None                            # adaptive column on the first N images only
    families: dict[str, str] = field(default_factory=dict)      # defense spec -> family
    trained: dict[str, bool] = field(default_factory=dict)      # defense spec -> fitted on the train split?
    identity: dict[str, bool] = field(default_factory=dict)     # defense spec -> identity (no-defense)?
    cert_eps: float = DEFAULT_CERT_EPS
    weights: dict[str, str] = field(default_factory=dict)       # metric/defense spec -> digest of its weights
    content: dict[str, str] = field(default_factory=dict)       # image id -> digest of its files ('' = generated)

    def adaptive_tag(self, attack: str, defense: str, image: str | None = None) -> str:
        """The wrapper recorded for the adaptive column of (attack, defense[, image]); "" = none."""
        if defense not in self.adaptive:
            return ""
        if image is not None and self.adaptive_limit is not None and image not in self._adaptive_ids():
            return ""
        return self.wrappers[defense] if self.white_box.get(attack, True) else "query"

    def _adaptive_ids(self) -> set[str]:
        return set(self.image_ids[: self.adaptive_limit])

    def _train_tag(self, attack: str) -> str:
        return _hash("train", *[it.id for it in self.train_items]) if self.trainable.get(attack) else ""

    def _defense_tag(self, defense: str) -> str:
        """What else shapes a defense's result: its training split, the certified radius."""
        parts = []
        if self.trained.get(defense):
            parts.append(_hash("train", *[it.id for it in self.train_items]))
        if self.families.get(defense) == "certified":
            parts.append(f"cert_eps={self.cert_eps!r}")
        return "|".join(parts)

    def _weights_tag(self, *specs: str) -> str:
        """The weights' digests of these methods: a metric or defense registered again with other
        weights (same name and parameters) gets new cells instead of the old scores."""
        return "|".join(f"w={self.weights[s]}" for s in specs if self.weights.get(s))

    def _content_tag(self, image: str) -> str:
        """The image's file content: replaced under the same name, it gets new cells."""
        return f"c={self.content[image]}" if self.content.get(image) else ""

    def cell_key(self, metric: str, attack: str, defense: str, image: str) -> str:
        # extra parts only when present, so keys of non-adaptive, non-trainable cells never change
        extra = [p for p in (self.adaptive_tag(attack, defense, image), self._train_tag(attack),
                             self._defense_tag(defense), self._weights_tag(metric, defense),
                             self._content_tag(image)) if p]
        return _hash("cell", metric, attack, defense, self.dataset, image, self.seed, CODE_VERSION, *extra)

    def attack_key(self, metric: str, attack: str, image: str) -> str:
        """Key of an adversarial image: shared by every defense of the same (metric, attack)."""
        extra = [p for p in (self._train_tag(attack), self._weights_tag(metric), self._content_tag(image)) if p]
        return _hash("adv", metric, attack, self.dataset, image, self.seed, CODE_VERSION, *extra)

    def adaptive_key(self, metric: str, attack: str, defense: str, image: str) -> str:
        """Key of an adaptive adversarial image: one per (metric, attack, defense, wrapper, image)."""
        extra = [p for p in (self._train_tag(attack), self._defense_tag(defense),
                             self._weights_tag(metric, defense), self._content_tag(image)) if p]
        return _hash("adv-adaptive", metric, attack, defense, self.adaptive_tag(attack, defense),
                     self.dataset, image, self.seed, CODE_VERSION, *extra)

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
                "images": len(self.image_ids), "code_version": CODE_VERSION,
                "adaptive": self.adaptive, "wrapper": self.wrapper, "eot_k": self.eot_k,
                "adaptive_limit": self.adaptive_limit, "cert_eps": self.cert_eps,
                **({"train_images": len(self.train_items)}
                   if any(self.trainable.values()) or any(self.trained.values()) else {}),
                **self.extra}


def _canon(registry, specs: Sequence[str], what: str, objs: dict | None = None) -> list[str]:
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise InputError(f"no {what} given")
    out: list[str] = []
    for s in specs:
        obj = registry.create(s)
        c = canonical(obj)
        if c not in out:
            out.append(c)
            if objs is not None:
                objs[c] = obj
    return out


def _adaptive_defenses(adaptive, defenses: list[str], objs: dict) -> list[str]:
    """``True``: every defense but the identity; a list: those defenses (each must be in the plan)."""
    if adaptive is None or adaptive is False:
        return []
    if adaptive is True:
        return [d for d in defenses if not getattr(objs[d], "identity", False)]
    if isinstance(adaptive, str):
        adaptive = [adaptive]
    out = []
    for spec in adaptive:
        c = canonical(DEFENSES.create(spec))
        if c not in defenses:
            raise InputError(f"adaptive defense {spec!r} is not among the run's defenses")
        if not getattr(objs[c], "identity", False) and c not in out:
            out.append(c)
    return out


def _select(ids: list[str], ds_obj, images: Sequence[str], dataset: str):
    """The subset's items whose ids are in ``images``, in the dataset's order."""
    if isinstance(images, str) or not len(images):
        raise InputError("images must be a non-empty list of image ids")
    missing = [i for i in images if i not in set(ids)]
    if missing:
        raise InputError(f"image {missing[0]!r} is not among the {len(ids)} evaluated images of {dataset!r}")
    keep = set(images)
    out = type(ds_obj).__new__(type(ds_obj))
    out.__dict__.update(ds_obj.__dict__)
    out.items = [it for it in ds_obj.items if it.id in keep]
    return [it.id for it in out.items], out


@dataclass
class _Cfg:
    wrapper: str
    eot_k: int


def train_split(full, evaluated: Sequence[str], n: int) -> list[Any]:
    """Up to ``n`` items of ``full`` not in ``evaluated``, spread evenly over the rest (disjoint
    from the evaluated images, so a trainable attack is never fitted on what it is scored on)."""
    ev = set(evaluated)
    rest = [it for it in full.items if it.id not in ev]
    if n <= 0 or not rest:
        return []
    if len(rest) <= n:
        return rest
    step = len(rest) / n
    return [rest[int(i * step)] for i in range(n)]


def make_plan(metrics=None, attacks=None, defenses=None, dataset: str | None = None,
              limit: int | None = None, seed: int = 0, adaptive=None, wrapper: str = "auto",
              eot_k: int | None = None, train_images: int = DEFAULT_TRAIN_IMAGES,
              adaptive_limit: int | None = None, cert_eps: float = DEFAULT_CERT_EPS,
              images: Sequence[str] | None = None) -> tuple[Plan, Any]:
    """Validate and canonicalise a spec; returns the plan and the (subset) dataset object.

    ``adaptive``: None or True (the default: every defense but ``no-defense`` gets the adaptive
    column), False (transfer only: cells are labelled ``transfer-only``) or a list of defense
    specs; ``wrapper``/``eot_k`` configure it (see iqaguard.adaptive; ``eot_k`` None = 10, or the
    quick suite's 4); ``adaptive_limit``: the adaptive column only on the first N images.
    ``train_images``: training split of trainable attacks and trained defenses. ``cert_eps``: the
    ℓ2 radius certified defenses certify. ``images``: evaluate only these ids of the ``limit``
    subset (``iqaguard verify`` re-runs one batch of a submission); the training split is still
    the one of the whole subset, so cell keys and fitted states are those of the full run.
    """
    from .families import FAMILIES, family_of

    quick = metrics is None and attacks is None and defenses is None and dataset is None
    metrics = QUICK["metrics"] if metrics is None else metrics
    attacks = QUICK["attacks"] if attacks is None else attacks
    defenses = QUICK["defenses"] if defenses is None else defenses
    dataset = QUICK["dataset"] if dataset is None else dataset
    if limit is None and quick:
        limit = QUICK["limit"]
    if adaptive is None:
        adaptive = True
    if quick:
        eot_k = QUICK["eot_k"] if eot_k is None else eot_k
    eot_k = DEFAULT_EOT_K if eot_k is None else eot_k
    if adaptive_limit is not None and (not isinstance(adaptive_limit, int) or isinstance(adaptive_limit, bool)
                                       or adaptive_limit < 1):
        raise InputError(f"adaptive_limit must be a positive integer or None, got {adaptive_limit!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise InputError(f"seed must be an integer, got {seed!r}")
    if wrapper not in WRAPPERS:
        raise InputError(f"wrapper must be one of {', '.join(WRAPPERS)}; got {wrapper!r}")
    for name, v in (("eot_k", eot_k), ("train_images", train_images)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    a_objs: dict[str, Any] = {}
    d_objs: dict[str, Any] = {}
    m_objs: dict[str, Any] = {}
    m = _canon(METRICS, metrics, "metrics", m_objs)
    a = _canon(ATTACKS, attacks, "attacks", a_objs)
    d = _canon(DEFENSES, defenses, "defenses", d_objs)
    adapt = _adaptive_defenses(adaptive, d, d_objs)
    if not isinstance(cert_eps, (int, float)) or isinstance(cert_eps, bool) or not 0 < cert_eps < 1e3:
        raise InputError(f"cert_eps must be a positive ℓ2 radius, got {cert_eps!r}")
    fams = {spec: family_of(obj).name for spec, obj in d_objs.items()}
    for spec in adapt:
        if fams[spec] == "purification" and wrapper in ("eot", "none") \
                and not getattr(d_objs[spec], "differentiable", True):
            raise InputError(f"wrapper {wrapper!r} cannot differentiate {spec!r} (not differentiable): "
                             f"use 'auto', 'bpda' or 'bpda+eot'")
    full = DATASETS.create(dataset)
    ds_spec = canonical(full)
    ds_obj = full.subset(limit)
    if len(ds_obj) == 0:
        raise InputError(f"dataset {dataset!r} has no images")
    ids = [it.id for it in ds_obj.items]
    trainable = {s: bool(getattr(o, "trainable", False)) for s, o in a_objs.items()}
    trained = {s: bool(getattr(o, "trainable", False)) for s, o in d_objs.items()}
    train = []
    if any(trainable.values()) or any(trained.values()):
        train = train_split(full, ids, train_images)
        if not train:
            names = ", ".join([s for s, t in trainable.items() if t] + [s for s, t in trained.items() if t])
            raise InputError(f"{names} need training images disjoint from the evaluated ones, "
                             f"but all {len(full)} images of {dataset!r} are evaluated: lower --limit")
    if images is not None:
        ids, ds_obj = _select(ids, ds_obj, images, dataset)
    plan = Plan(m, a, d, ds_spec, ids, seed, limit,
                extra={"suite": "quick" if quick else "custom"},
                adaptive=adapt, wrapper=wrapper, eot_k=eot_k, train_images=train_images,
                white_box={s: bool(getattr(o, "white_box", True)) for s, o in a_objs.items()},
                trainable=trainable,
                wrappers={s: FAMILIES[fams[s]].wrapper(d_objs[s], _Cfg(wrapper, eot_k)) for s in adapt},
                train_items=train, adaptive_limit=adaptive_limit if adapt else None,
                families=fams, trained=trained, cert_eps=float(cert_eps),
                identity={s: bool(getattr(o, "identity", False)) for s, o in d_objs.items()},
                weights={s: _weights_digest(o) for s, o in {**m_objs, **d_objs}.items()},
                content={it.id: content_digest(it) for it in ds_obj.items})
    return plan, ds_obj


def _weights_digest(obj) -> str:
    """Short sha256 of every tensor an object holds: a module's state, or the modules among its
    attributes and theirs (a purifier's network, a denoiser's net); '' for an object without weights."""
    from ..fitting import weights_digest

    mods = [mod for mod in _modules(obj, 3) if any(True for _ in mod.state_dict())]
    return hashlib.sha256("".join(weights_digest(mod) for mod in mods).encode()).hexdigest()[:16] if mods else ""


def _modules(obj, depth: int) -> list:
    import torch

    if isinstance(obj, torch.nn.Module):
        return [obj]
    if depth == 0 or not hasattr(obj, "__dict__") or isinstance(obj, type):
        return []
    return [m for _, v in sorted(vars(obj).items()) for m in _modules(v, depth - 1)]
