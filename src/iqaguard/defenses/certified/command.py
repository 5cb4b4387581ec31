"""``iqaguard certify``: certified score intervals of image files, one dict per image."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from ...errors import InputError
from ...images import load_image
from ...registry import DEFENSES, METRICS, canonical
from ...seeds import derive_seed


def certify_command(metric_spec: str, defense_spec: str, image_paths: Sequence[str], eps: float,
                    alpha: float | None = None, seed: int = 0, ref_paths: Sequence[str] | None = None) -> list[dict]:
    """Certify each image: keys ``image``, ``score``, ``lo``, ``hi``, ``abstained``, ``eps``,
    ``alpha``, ``forwards`` (base-metric passes) and ``seconds``. Image i's noise comes from
    ``derive_seed(seed, canonical metric, canonical defense, path)``, so a result does not depend
    on which other images are certified with it. FR metrics need one reference per image."""
    if not image_paths:
        raise InputError("certify needs at least one image path")
    metric = METRICS.create(metric_spec)
    defense = DEFENSES.create(defense_spec)
    if getattr(defense, "family", "") != "certified":
        raise InputError(f"defense {defense.name!r} is not certified (family {defense.family!r}); "
                         f"certified defenses: rs, drs, ms, dms, ddrs, densepure")
    if metric.mode == "FR" and (not ref_paths or len(ref_paths) != len(image_paths)):
        raise InputError(f"full-reference metric {metric.name!r} needs one reference per image "
                         f"({len(image_paths)} images, {len(ref_paths or [])} references)")
    if metric.mode == "NR" and ref_paths:
        raise InputError(f"metric {metric.name!r} is no-reference and would ignore --ref; drop --ref "
                         f"or use a full-reference metric")
    smoothed = defense.protect(metric)
    m_key, d_key = canonical(metric), canonical(defense)
    rows = []
    for i, path in enumerate(image_paths):
        x = load_image(path)
        ref = load_image(ref_paths[i]) if metric.mode == "FR" else None
        smoothed.seeds = [derive_seed(seed, m_key, d_key, str(Path(path)))]
        before, t0 = smoothed.forwards, time.perf_counter()
        cert = smoothed.certify(x, eps, alpha=alpha, ref=ref)
        row = dict(image=str(path), **cert.rows()[0], eps=cert.eps, alpha=cert.alpha,
                   forwards=smoothed.forwards - before, seconds=time.perf_counter() - t0)
        rows.append(row)
    return rows
