"""iqaguard: a benchmark of defenses against adversarial attacks on image-quality metrics."""
from __future__ import annotations

from typing import Any

from .errors import InputError
from .registry import ATTACKS, DATASETS, DEFENSES, METRICS, canonical
from .spec import Spec, parse_spec, format_spec
from .metrics.base import Metric, wrap_metric
from .attacks.base import Attack
from .defenses.base import Defense, Purifier
from .data.base import Dataset, Item

from . import metrics as _metrics  # noqa: F401  (registration)
from . import attacks as _attacks  # noqa: F401
from . import defenses as _defenses  # noqa: F401
from . import data as _data  # noqa: F401

from ._version import __version__  # noqa: E402

__all__ = [
    "InputError", "Metric", "Attack", "Defense", "Purifier", "Dataset", "Item", "Spec",
    "create_metric", "create_attack", "create_defense", "create_dataset",
    "list_metrics", "list_attacks", "list_defenses", "list_datasets",
    "wrap_metric", "benchmark", "parse_spec", "format_spec", "canonical", "__version__",
]


def create_metric(spec: str, /, **params: Any) -> Metric:
    """``create_metric("niqe")`` or ``create_metric("ssim:channel=rgb")``."""
    return METRICS.create(spec, **params)


def create_attack(spec: str, /, **params: Any) -> Attack:
    return ATTACKS.create(spec, **params)


def create_defense(spec: str, /, **params: Any) -> Defense:
    return DEFENSES.create(spec, **params)


def create_dataset(spec: str, /, **params: Any) -> Dataset:
    return DATASETS.create(spec, **params)


def list_metrics(pattern: str | None = None) -> list[str]:
    return METRICS.names(pattern)


def list_attacks(pattern: str | None = None) -> list[str]:
    return ATTACKS.names(pattern)


def list_defenses(pattern: str | None = None) -> list[str]:
    return DEFENSES.names(pattern)


def list_datasets(pattern: str | None = None) -> list[str]:
    return DATASETS.names(pattern)


def benchmark(metrics=None, attacks=None, defenses=None, dataset: str | None = None, report: bool = True,
              workers: int | None = None, scheduler: str | None = None, **kwargs):
    """Run a grid and return a ``Result`` (per-image rows and per-cell scores; see
    evaluation.runner); with ``report`` also the HTML report, rendered from the store.

    ``workers=N`` runs the tasks on a local Dask cluster of N processes, ``scheduler="tcp://…"``
    on an existing Dask cluster (extra ``iqaguard[dask]``; evaluation.dask_executor); neither: in
    this process. Other keywords go to ``run_benchmark`` (e.g. ``executor=``)."""
    from .evaluation.runner import run_benchmark

    if workers is not None or scheduler is not None:
        if kwargs.get("executor") is not None:
            raise InputError("give executor or workers/scheduler, not both")
        from .evaluation.dask_executor import dask_executor

        kwargs["executor"] = dask_executor(workers=workers, scheduler=scheduler)
    result = run_benchmark(metrics=metrics, attacks=attacks, defenses=defenses, dataset=dataset, **kwargs)
    if report:
        from .report.build import report_for_result

        result.files["report"] = report_for_result(result)
    return result
