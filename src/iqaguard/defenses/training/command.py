"""``train_defense_command``: train a defense ahead of a run (``iqaguard train-defense``).

It fine-tunes through ``iqaguard.fitting.fit_or_load`` on the split a run would train on — up to
``train_images`` dataset items *not* among the first ``limit`` evaluated ones, spread evenly
(``evaluation.plan.train_split``), resized to one shape — so the run later finds the state in
the cache and trains nothing. The cache is ``<out>/trainable`` (where runs keep trained states).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import InputError
from ...fitting import fit_or_load, spec_of, state_key, state_path
from ...images import check_image
from ...registry import DATASETS, DEFENSES, METRICS, canonical


def training_batch(items) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Load ``items`` as one batch at the first item's size (refs too, when every item has one)."""
    xs = [check_image(it.load(), f"training image {it.id!r}") for it in items]
    refs = [it.load_ref() if it.load_ref is not None else None for it in items]
    size = xs[0].shape[-2:]

    def fit(t):
        if t.shape[-2:] == size:
            return t
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)

    x = torch.cat([fit(t) for t in xs])
    ref = torch.cat([fit(r) for r in refs]) if all(r is not None for r in refs) else None
    return x, ref


def train_defense_command(defense_spec: str, metric_spec: str, dataset: str = "bundled",
                          limit: int | None = None, out: str | Path = "iqaguard-out",
                          train_images: int = 32, progress: bool = True) -> dict[str, Any]:
    """Fit (or load) ``defense_spec`` for ``metric_spec`` on the training split of ``dataset``
    that a run over its first ``limit`` images (None: the whole dataset, which leaves no
    training images) would use.
    Returns what was done: path, whether it trained, seconds and gradient calls."""
    from ...evaluation.plan import train_split

    defense = DEFENSES.create(defense_spec)
    if getattr(defense, "family", "") != "training" or not getattr(defense, "trainable", False):
        raise InputError(f"defense {defense_spec!r} is not a trained defense (family "
                         f"{getattr(defense, 'family', '?')!r}); nothing to train")
    if isinstance(train_images, bool) or not isinstance(train_images, int) or train_images < 1:
        raise InputError(f"train_images must be an integer >= 1, got {train_images!r}")
    metric = METRICS.create(metric_spec)
    data = DATASETS.create(dataset)
    evaluated = data.subset(limit).items
    items = train_split(data, [it.id for it in evaluated], train_images)
    if not items:
        raise InputError(f"dataset {dataset!r} has no images left for training after the {len(evaluated)} "
                         f"evaluated ones; lower limit")
    x, ref = training_batch(items)
    ref = ref if metric.mode == "FR" else None
    cache = Path(out) / "trainable"
    path = state_path(defense, state_key(defense, metric, x, ref), cache)
    cached = path.is_file()
    bar = None
    if progress and not cached:
        from tqdm.auto import tqdm

        bar = tqdm(total=defense.total_steps(x.shape[0]), unit="step", dynamic_ncols=True,
                   desc=f"{canonical(defense)} on {spec_of(metric)}")
        defense.on_step = lambda: bar.update(1)
    start = time.perf_counter()
    try:
        fit_or_load(defense, metric, x, cache, ref=ref)
    finally:
        defense.on_step = None
        if bar is not None:
            bar.close()
    trained = defense.fit_stats.grad_calls > 0 and not cached
    return {"defense": canonical(defense), "metric": spec_of(metric), "dataset": dataset,
            "train_images": int(x.shape[0]), "path": str(path), "trained": trained,
            "seconds": round(time.perf_counter() - start, 3),
            "grad_calls": int(defense.fit_stats.grad_calls) if trained else 0}
