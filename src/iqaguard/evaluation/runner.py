"""Run a grid: plan → tasks → an executor → the store's single writer → outputs.

``run_benchmark`` is the driver. It validates the plan, records the run (provenance, the methods'
metadata and the run's cells) in the store, turns the pending cells into tasks (``tasks.py``),
hands them to an executor and writes every result it gets back, one transaction per task. Executors:
``local_executor`` (a :class:`~iqaguard.evaluation.worker.Worker` in this process) and the Dask one
(``dask_executor.py``, optional extra). Outputs
(CSVs) are computed from the store alone (``outputs.py``); the HTML report is the report
package's job (``iqaguard.report``), so ``evaluation`` never imports ``report``.
"""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import torch

from ..errors import InputError
from ..images import save_png
from ..registry import ATTACKS, DEFENSES, METRICS, short_spec
from .flags import attack_budget_info, probe_key
from .outputs import OUTPUTS, collect
from .plan import Plan, make_plan
from .provenance import provenance as make_provenance
from .store import Store
from .tasks import Task, TaskResult, make_tasks
from .worker import Worker

DEFAULT_OUT = "iqaguard-out"


@dataclass
class Result:
    """What a benchmark returns: per-image rows, per-cell scores and where the outputs are."""
    rows: pd.DataFrame
    summary: pd.DataFrame
    worst: pd.DataFrame
    two_axis: pd.DataFrame
    run_id: str
    out_dir: Path
    store: Path
    provenance: dict[str, Any]
    reused: int = 0
    computed: int = 0
    errors: int = 0
    files: dict[str, Path] = field(default_factory=dict)
    flags: pd.DataFrame = field(default_factory=pd.DataFrame)   # metric, attack, defense, flag, detail
    failures: pd.DataFrame = field(default_factory=pd.DataFrame)  # this run's failed cells, with their error


def run_benchmark(metrics=None, attacks=None, defenses=None, dataset=None, *, limit: int | None = None,
                  store: str | Path | None = None, out: str | Path = DEFAULT_OUT, seed: int = 0,
                  device: str = "cpu", batch_size: int = 8, progress: bool = False,
                  report: bool = True, adaptive=None, wrapper: str = "auto", eot_k: int | None = None,
                  train_images: int = 32, adaptive_limit: int | None = None, cert_eps: float = 0.25,
                  retry_failed: bool = False, images: list[str] | None = None,
                  executor: Callable[[list[Task], "Worker"], Iterable[tuple[Task, TaskResult]]] | None = None
                  ) -> Result:
    """Run a grid of metrics × attacks × defenses × images; reuse every finished cell.

    Every defended cell gets an adaptive column by default (``adaptive`` None/True): the attack
    run against ``defense.protect(metric)`` itself — direct white-box, BPDA or EOT per ``wrapper``
    and ``eot_k``, queries for black-box attacks — on the first ``adaptive_limit`` images (None:
    all). ``adaptive=False`` gives transfer-only cells (labelled so). Trainable attacks and trained
    defenses are fitted on up to ``train_images`` dataset images that are not evaluated.
    ``images`` restricts the run to those ids of the ``limit`` subset (same cell keys).
    ``report`` is accepted for the caller (``iqaguard.benchmark`` renders the HTML report).
    A cell that failed (its method raised, or gave a NaN/Inf score) is stored with its error and
    kept failed on a rerun unless ``retry_failed``; ``Result.failures`` lists this run's failures.
    """
    device = _check_device(device)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    plan, data = make_plan(metrics, attacks, defenses, dataset, limit, seed, adaptive=adaptive,
                           wrapper=wrapper, eot_k=eot_k, train_images=train_images,
                           adaptive_limit=adaptive_limit, cert_eps=cert_eps, images=images)
    from ..paths import output_dir, output_file

    out_dir = Path(out)
    output_dir(out_dir, "out")                 # a file, unwritable, … : one line before any work
    store_path = Path(store) if store is not None else out_dir / "iqaguard.db"
    output_file(store_path, "store")
    _check_fr(plan, data)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    prov = make_provenance(seed, device, plan.as_dict())
    prov["run_id"] = run_id
    counts = {"reused": 0, "computed": 0, "errors": 0, "failed_kept": 0}
    with Store(store_path) as st:
        st.start_run(run_id, prov, plan.as_dict())
        st.write_methods(method_records(plan))
        cells = list(plan.cells())             # keys hashed once for the whole run
        keys = [c[4] for c in cells]
        st.write_run_cells(run_id, cells)
        _save_first_clean(plan, data, out_dir)
        try:
            _drive(plan, keys, data, st, out_dir, run_id, device, batch_size, progress, counts, executor,
                   retry_failed)
        except BaseException:
            st.finish_run(run_id, "interrupted")
            raise
        st.finish_run(run_id)
        stamp = _outputs_stamp(plan, st.path)
        result = _up_to_date(st, run_id, out_dir, stamp, prov) if counts["computed"] == counts["errors"] == 0 else None
        if result is None:
            res = collect(st, run_id, out_dir)
            _write_stamp(out_dir, stamp)
            result = Result(res.rows, res.summary, res.worst, res.two_axis, run_id, out_dir, st.path, prov,
                            files={"store": st.path, **res.files}, flags=res.flags)
        result.failures = st.errors(keys)
    result.reused, result.computed = counts["reused"], counts["computed"]
    result.errors = counts["errors"] + counts["failed_kept"]
    return result


def _drive(plan, keys: list[str], data, st: Store, out_dir, run_id, device, batch_size, progress, counts,
           executor, retry_failed: bool = False) -> None:
    """Tasks out, results in: the driver is the store's only writer."""
    done = st.done_keys(keys)
    failed = set() if retry_failed else st.failed_keys(keys)
    counts["reused"], counts["failed_kept"] = len(done), len(failed)
    pending = len(keys) - len(done) - len(failed)
    if pending == 0:
        return
    probed = set(st.probes([probe_key(plan, m, d) for m in plan.metrics for d in plan.defenses])["key"])
    tasks = make_tasks(plan, done | failed, batch_size, probed)
    for t in tasks:
        t.cached_adv = st.adversarial(_adv_keys(plan, t))
    worker = Worker(plan, {it.id: it for it in data.items}, out_dir, run_id, device, progress)
    run = executor or local_executor
    bar = _progress(pending, progress)
    try:
        for task, res in run(tasks, worker):
            write_result(st, res)
            counts["computed"] += len(res.rows)
            n_err = sum(len(f) for f, _ in res.errors)
            counts["errors"] += n_err
            bar.update(len(res.rows) + n_err)
    finally:
        bar.close()


def local_executor(tasks: list[Task], worker: Worker) -> Iterable[tuple[Task, TaskResult]]:
    """Run every task in this process, in order."""
    for task in tasks:
        yield task, worker.run(task)


def write_result(st: Store, res: TaskResult) -> None:
    """Everything a task returned: adversarial records first, so a row never precedes its image."""
    import warnings

    if res.probes:
        st.write_probes(res.probes)
    if res.adversarial:
        st.write_adversarial(res.adversarial)
    for fields, msg in res.errors:
        f0 = fields[0]
        warnings.warn(f"{f0['metric']} × {f0['attack']} × {f0['defense']} failed on {len(fields)} images: {msg}")
        st.write_errors(fields, msg)
    st.write_rows(res.rows)


def _adv_keys(plan: Plan, task: Task) -> list[str]:
    keys = [plan.attack_key(task.metric, task.attack, img) for img in task.images]
    keys += [plan.adaptive_key(task.metric, task.attack, d, img) for d in task.defenses for img in task.images]
    return keys


def _check_fr(plan: Plan, data) -> None:
    if data.has_ref:
        return
    for m in plan.metrics:
        if METRICS.create(m).mode == "FR":
            raise InputError(f"metric {m!r} is full-reference but dataset {plan.dataset!r} has no references")


def method_records(plan: Plan) -> list[dict[str, Any]]:
    """Each method's metadata for the store's methods table (what reports and boards show)."""
    recs = []
    for spec in plan.metrics:
        m = METRICS.create(spec)
        recs.append({"spec": spec, "kind": "metric", "name": m.name, "short": short_spec(METRICS, spec),
                     "family": m.mode, "differentiable": bool(m.differentiable),
                     "info": json.dumps({"lower_better": bool(m.lower_better), "score_range": list(m.score_range)})})
    for spec in plan.attacks:
        a = ATTACKS.create(spec)
        info = attack_budget_info(a)
        recs.append({"spec": spec, "kind": "attack", "name": a.name, "short": short_spec(ATTACKS, spec),
                     "threat": getattr(a, "threat", None), "budget_param": info["budget_param"],
                     "budget_value": info["budget"], "white_box": info["white_box"],
                     "differentiable": None, "randomized": None, "info": info["family"],
                     "paper": getattr(a, "paper", "") or None})
    for spec in plan.defenses:
        d = DEFENSES.create(spec)
        recs.append({"spec": spec, "kind": "defense", "name": d.name, "short": short_spec(DEFENSES, spec),
                     "family": plan.families[spec], "differentiable": bool(getattr(d, "differentiable", True)),
                     "randomized": bool(getattr(d, "randomized", False)),
                     "paper": getattr(d, "paper", "") or None,
                     "weights_licence": getattr(d, "weights_licence", "") or None})
    return recs


def _save_first_clean(plan: Plan, data, out_dir: Path) -> None:
    """The first image, for the report's strips (the report never needs the dataset)."""
    path = out_dir / "clean" / "first.png"
    if not path.exists():
        item = next(it for it in data.items if it.id == plan.image_ids[0])
        save_png(item.load(), path)


# -- outputs are rebuilt only when a cell changed (a rerun of a finished plan is instant) --------

_STAMP = ".iqaguard-outputs.json"


def _outputs_stamp(plan: Plan, store: Path) -> str:
    text = json.dumps([plan.as_dict(), str(store.resolve())], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_stamp(out_dir: Path, stamp: str) -> None:
    from ..atomic import write_text

    write_text(out_dir / _STAMP, json.dumps({"stamp": stamp}))


def _up_to_date(st: Store, run_id: str, out_dir: Path, stamp: str, prov: dict[str, Any]) -> Result | None:
    """The previous outputs, when they were written for exactly this plan and nothing changed since."""
    try:
        if json.loads((out_dir / _STAMP).read_text())["stamp"] != stamp:
            return None
    except (OSError, ValueError, KeyError):
        return None
    files = {name: out_dir / f for name, f in OUTPUTS.items()}
    if not all(p.exists() for p in files.values()):
        return None
    frames = {name: _read_csv(files[name]) for name in OUTPUTS if name != "results"}
    from .outputs import run_rows

    rows = run_rows(st, st.run(run_id))
    return Result(rows, frames["summary"], frames["worst"], frames["two_axis"], run_id, out_dir, st.path, prov,
                  files={"store": st.path, **files}, flags=frames["flags"])


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _check_device(device: str) -> str:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r} is not a torch device (use cpu, cuda, cuda:1, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    return str(dev)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="cell", desc="iqaguard", dynamic_ncols=True)
