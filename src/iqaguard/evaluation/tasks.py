"""The grid as independent tasks, and what a task returns to the store's single writer.

A task is (metric, attack, image batch) with all its defenses: the adversarial batch is computed
once and every defense reuses it ("attack once, defend many"). A worker executes a task without
touching the store; the driver writes its result in one transaction per kind, so an executor
(local or Dask) only has to move tasks out and results back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


@dataclass
class Task:
    metric: str
    attack: str
    images: list[str]
    defenses: list[str]                      # defenses with at least one pending cell here
    pending: set[str]                        # cell keys still to compute
    cached_adv: dict[str, dict[str, Any]] = field(default_factory=dict)   # adversarial records already stored
    probe: list[str] = field(default_factory=list)   # defenses whose honesty probes this task computes


@dataclass
class TaskResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    errors: list[tuple[list[dict[str, Any]], str]] = field(default_factory=list)
    adversarial: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)


def _chunks(seq: Sequence[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(seq), n):
        yield list(seq[i:i + n])


def make_tasks(plan, done: set[str], batch_size: int, probed: set[str]) -> list[Task]:
    """Every (metric, attack, batch) with a pending cell, in plan order. ``probed``: probe keys
    already stored; the first task of each metric carries the probes still missing."""
    from .flags import probe_key

    tasks: list[Task] = []
    for m in plan.metrics:
        first = True
        for a in plan.attacks:
            todo = [img for img in plan.image_ids
                    if any(plan.cell_key(m, a, d, img) not in done for d in plan.defenses)]
            for batch in _chunks(todo, batch_size):
                pending = {plan.cell_key(m, a, d, img) for d in plan.defenses for img in batch} - done
                defenses = [d for d in plan.defenses if any(plan.cell_key(m, a, d, img) in pending for img in batch)]
                probe = []
                if first:
                    probe = [d for d in plan.defenses if probe_key(plan, m, d) not in probed]
                    first = False
                tasks.append(Task(m, a, batch, defenses, pending, probe=probe))
    return tasks
