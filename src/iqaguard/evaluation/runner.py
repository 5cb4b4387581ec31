"""Execute a plan: **attack once, defend many**.

For each (metric, attack) the adversarial batch is computed once (or loaded from its PNG),
then every defense is applied to the clean and the attacked batch with the same random draw.
Finished cells are written to the store one (batch × defense) transaction at a time.
"""
from __future__ import annotations

import hashlib
import json
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from ..adaptive import adaptive as make_adaptive
from ..fitting import fit_or_load
from ..errors import InputError
from ..images import check_image, load_image, save_png
from ..registry import ATTACKS, DEFENSES, METRICS, short_spec
from ..seeds import derive_seed
from .flags import FLAG_COLUMNS, annotate_worst, probe_key
from .plan import Plan, make_plan
from .provenance import provenance as make_provenance
from .rows import QUALITY_METRICS
from .store import Store

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


def run_benchmark(metrics=None, attacks=None, defenses=None, dataset=None, *, limit: int | None = None,
                  store: str | Path | None = None, out: str | Path = DEFAULT_OUT, seed: int = 0,
                  device: str = "cpu", batch_size: int = 8, progress: bool = False,
                  report: bool = True, adaptive=None, wrapper: str = "auto", eot_k: int | None = None,
                  train_images: int = 32, adaptive_limit: int | None = None) -> Result:
    """Run a grid of metrics × attacks × defenses × images; reuse every finished cell.

    ``adaptive`` (True, or a list of defense specs; the quick suite has its own list) adds the
    adaptive column: each attack runs again *through* the defense (BPDA/EOT per ``wrapper`` and
    ``eot_k`` for white-box attacks, queries through ``defense.protect(metric)`` for black-box
    ones), on the first ``adaptive_limit`` images (None: all). ``eot_k`` draws per EOT gradient
    (None: 10). Trainable attacks are fitted on up to ``train_images`` dataset images not evaluated.
    """
    device = _check_device(device)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    plan, data = make_plan(metrics, attacks, defenses, dataset, limit, seed, adaptive=adaptive,
                           wrapper=wrapper, eot_k=eot_k, train_images=train_images,
                           adaptive_limit=adaptive_limit)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    store_path = Path(store) if store is not None else out_dir / "iqaguard.db"
    run_id = uuid.uuid4().hex[:12]
    prov = make_provenance(seed, device, plan.as_dict())
    prov["run_id"] = run_id
    with Store(store_path) as st:
        st.start_run(run_id, prov, plan.as_dict())
        runner = _Runner(plan, data, st, out_dir, run_id, device, batch_size, progress)
        try:
            runner.run()
        except BaseException:
            st.finish_run(run_id, "interrupted")
            raise
        st.finish_run(run_id)
        stamp = _outputs_stamp(plan, st.path, report)
        result = None
        if runner.computed == 0 and runner.errors == 0:
            result = _up_to_date(st, plan, out_dir, stamp, prov, report)
        if result is None:
            result = collect(st, plan, data, out_dir, prov, report=report)
            _write_stamp(out_dir, stamp)
    result.reused, result.computed, result.errors = runner.reused, runner.computed, runner.errors
    return result


# -- outputs are rebuilt only when a cell changed (a rerun of a finished plan is instant) --------

_STAMP = ".iqaguard-outputs.json"
_OUTPUTS = {"results": "results.csv", "summary": "summary.csv", "worst": "worst_case.csv", "two_axis": "tradeoff.csv",
            "flags": "flags.csv"}


def _outputs_stamp(plan: Plan, store: Path, report: bool) -> str:
    text = json.dumps([plan.as_dict(), str(store.resolve()), report], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _write_stamp(out_dir: Path, stamp: str) -> None:
    tmp = out_dir / (_STAMP + ".tmp")
    tmp.write_text(json.dumps({"stamp": stamp}))
    tmp.replace(out_dir / _STAMP)


def _up_to_date(st: Store, plan: Plan, out_dir: Path, stamp: str, prov: dict[str, Any],
                report: bool) -> Result | None:
    """The previous outputs, when they were written for exactly this plan and nothing changed since."""
    try:
        if json.loads((out_dir / _STAMP).read_text())["stamp"] != stamp:
            return None
    except (OSError, ValueError, KeyError):
        return None
    files = {name: out_dir / f for name, f in _OUTPUTS.items()}
    if report:
        files["report"] = out_dir / "index.html"
    if not all(p.exists() for p in files.values()):
        return None
    frames = {name: _read_csv(files[name]) for name in _OUTPUTS if name != "results"}
    rows = _in_plan_order(st.rows(keys=[c[4] for c in plan.cells()]), plan)
    return Result(rows, frames["summary"], frames["worst"], frames["two_axis"],
                  prov.get("run_id", ""), out_dir, st.path, prov, files={"store": st.path, **files},
                  flags=frames["flags"])


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


class _Runner:
    def __init__(self, plan: Plan, data, store: Store, out_dir: Path, run_id: str, device: str,
                 batch_size: int, progress: bool):
        self.plan, self.data, self.store = plan, data, store
        self.out_dir, self.run_id, self.device = out_dir, run_id, torch.device(device)
        self.batch_size, self.progress = batch_size, progress
        self.items = {it.id: it for it in data.items}
        self.reused = self.computed = self.errors = 0
        self.quality = {q: METRICS.create(q).to(self.device).eval() for q in QUALITY_METRICS}
        # defended-clean results do not depend on the attack: computed once per (metric, defense, image)
        self._dc_cache: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._train: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._adaptive_attacks: dict[tuple[str, str, str], Any] = {}

    # -- the grid -------------------------------------------------------------------------
    def run(self) -> None:
        plan = self.plan
        all_keys = [c[4] for c in plan.cells()]
        done = self.store.done_keys(all_keys)
        self.reused = len(done)
        pending = len(all_keys) - len(done)
        if pending == 0:
            return
        defenses = {d: DEFENSES.create(d) for d in plan.defenses}
        bar = _progress(pending, self.progress)
        try:
            for m_spec in plan.metrics:
                todo = {a: [img for img in plan.image_ids
                            if any(plan.cell_key(m_spec, a, d, img) not in done for d in plan.defenses)]
                        for a in plan.attacks}
                if not any(todo.values()):
                    continue
                metric = METRICS.create(m_spec).to(self.device).eval()
                if metric.mode == "FR" and not self.data.has_ref:
                    raise InputError(f"metric {m_spec!r} is full-reference but dataset {plan.dataset!r} has no references")
                self._probe(metric, m_spec, defenses, done)
                for a_spec in plan.attacks:
                    if not todo[a_spec]:
                        continue
                    attack = ATTACKS.create(a_spec)
                    if plan.trainable.get(a_spec):
                        attack = self._fit(attack, metric, self.out_dir / "trainable")
                    for batch in _chunks(todo[a_spec], self.batch_size):
                        for group in self._by_shape(batch):
                            self._run_batch(metric, m_spec, attack, a_spec, defenses, group, done, bar)
        finally:
            bar.close()

    def _by_shape(self, ids: Sequence[str]) -> list[tuple[list[str], torch.Tensor, torch.Tensor | None]]:
        """Load a batch and split it into same-size groups (datasets may mix sizes)."""
        loaded = []
        for img in ids:
            item = self.items[img]
            x = check_image(item.load(), f"image {img!r}")
            ref = item.load_ref() if item.load_ref is not None else None
            loaded.append((img, x, ref))
        groups: dict[tuple, list] = {}
        for rec in loaded:
            groups.setdefault(tuple(rec[1].shape), []).append(rec)
        out = []
        for recs in groups.values():
            ids_ = [r[0] for r in recs]
            x = torch.cat([r[1] for r in recs]).to(self.device)
            refs = [r[2] for r in recs]
            ref = torch.cat(refs).to(self.device) if all(r is not None for r in refs) else None
            out.append((ids_, x, ref))
        return out

    def _run_batch(self, metric, m_spec, attack, a_spec, defenses, group, done, bar) -> None:
        ids, x, ref = group
        ref_arg = ref if metric.mode == "FR" else None
        with torch.no_grad():
            clean = metric(x, ref_arg) if ref_arg is not None else metric(x)
        x_adv, adv = self._adversarial(metric, m_spec, attack, a_spec, ids, x, ref_arg)
        with torch.no_grad():
            attacked = metric(x_adv, ref_arg) if ref_arg is not None else metric(x_adv)
            q_ca = self._quality(x, x_adv, m_spec)
        linf = (x_adv - x).flatten(1).abs().amax(1)
        for d_spec, defense in defenses.items():
            keys = [self.plan.cell_key(m_spec, a_spec, d_spec, img) for img in ids]
            sel = [i for i, k in enumerate(keys) if k not in done]
            if not sel:
                continue
            try:
                rows = self._defend(metric, m_spec, a_spec, d_spec, defense, ids, keys, sel, x, x_adv, ref_arg,
                                    clean, attacked, q_ca, linf, adv)
            except Exception as exc:  # a failing method (or an image it cannot take) loses its cells, not the run
                msg = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"{m_spec} × {a_spec} × {d_spec} failed on {len(sel)} images: {msg}")
                self.store.write_errors([self._key_fields(m_spec, a_spec, d_spec, ids[i], keys[i]) for i in sel], msg)
                self.errors += len(sel)
                bar.update(len(sel))
                continue
            self.store.write_rows(rows)
            self.computed += len(rows)
            bar.update(len(rows))

    def _adversarial(self, metric, m_spec, attack, a_spec, ids, x, ref):
        """Attacked batch: from the PNG cache when present, else computed, quantised and saved."""
        keys = [self.plan.attack_key(m_spec, a_spec, img) for img in ids]
        return self._attack_cached(keys, metric, lambda: attack, m_spec, a_spec, ids, x, ref)

    def _attack_cached(self, keys, target, make_attack, m_spec, label, ids, x, ref, grad_cost: int = 1):
        """Run the attack on ``target`` for the images whose ``keys`` are not cached yet.

        ``make_attack()`` is called only then, so a fully cached batch never builds (or fits) it."""
        cached = self.store.adversarial(keys)
        adv_dir = self.out_dir / "adversarial"
        x_adv = torch.empty_like(x)
        missing = []
        for i, k in enumerate(keys):
            rec = cached.get(k)
            path = adv_dir / f"{k}.png"
            if rec is not None and path.exists():
                x_adv[i] = load_image(path)[0].to(x.device)
            else:
                missing.append(i)
        if missing:
            xs = x[missing]
            refs = None if ref is None else ref[missing]
            attack = make_attack()
            torch.manual_seed(derive_seed(self.plan.seed, keys[missing[0]]))
            out = attack(target, xs, refs)
            out = attack.quantize(out, xs)
            n = len(missing)
            stats = attack.stats
            records = []
            for j, i in enumerate(missing):
                x_adv[i] = out[j]
                path = save_png(out[j:j + 1].cpu(), adv_dir / f"{keys[i]}.png")
                records.append({"key": keys[i], "metric": m_spec, "attack": label, "dataset": self.plan.dataset,
                                "image": ids[i], "path": str(path.relative_to(self.out_dir)),
                                "attack_seconds": stats.seconds / n, "grad_calls": stats.grad_calls * grad_cost,
                                "queries": stats.queries / n, "run_id": self.run_id})
            self.store.write_adversarial(records)
            cached.update({r["key"]: r for r in records})
        return x_adv, [cached[k] for k in keys]

    def _defend(self, metric, m_spec, a_spec, d_spec, defense, ids, keys, sel, x, x_adv, ref,
                clean, attacked, q_ca, linf, adv) -> list[dict[str, Any]]:
        seeds = [derive_seed(self.plan.seed, m_spec, d_spec, ids[i]) for i in sel]
        xs, xa = x[sel], x_adv[sel]
        refs = None if ref is None else ref[sel]
        dc_rows = self._defended_clean(metric, m_spec, d_spec, defense, [ids[i] for i in sel], xs, refs, seeds)
        with torch.no_grad():
            t0 = time.perf_counter()
            ya, ra = defense.purify_pair(xa, refs, seeds)
            t_da = time.perf_counter() - t0
            da = self._score(metric, ya, ra)
            q_cda = self._quality(xs, _to_size(ya, xs), m_spec)
        tags = [self.plan.adaptive_tag(a_spec, d_spec, ids[i]) for i in sel]
        da_adapt: list[float | None] = [None] * len(sel)
        sub = [j for j, t in enumerate(tags) if t]
        if sub:
            r_sub = None if refs is None else refs[sub]
            x_ad = self._adaptive(metric, m_spec, a_spec, d_spec, defense, [ids[sel[j]] for j in sub], xs[sub], r_sub)
            with torch.no_grad():
                y2, r2 = defense.purify_pair(x_ad, r_sub, [seeds[j] for j in sub])
                for j, v in zip(sub, self._score(metric, y2, r2)):
                    da_adapt[j] = float(v)
        self._save_strip(m_spec, a_spec, d_spec, ids, sel, keys, ya)
        rows = []
        for j, i in enumerate(sel):
            dc = dc_rows[j]
            item = self.items[ids[i]]
            row = {
                "cell": keys[i], "run_id": self.run_id, "metric": m_spec, "attack": a_spec, "defense": d_spec,
                "dataset": self.plan.dataset, "image": ids[i],
                "clear": float(clean[i]), "attacked": float(attacked[i]),
                "defended_clear": dc["score"], "defended_attacked": float(da[j]),
                "defended_attacked_adaptive": da_adapt[j],
                "truth": item.truth, "truth_kind": item.truth_kind, "group": item.group,
                "linf_c_a": float(linf[i]),
                "lower_better": bool(metric.lower_better), "range_lo": metric.score_range[0],
                "range_hi": metric.score_range[1], "seed": self.plan.seed, "adaptive_wrapper": tags[j] or None,
                "defense_seconds": (dc["seconds"] + t_da / len(sel)) / 2,
                "attack_seconds": adv[i].get("attack_seconds"), "grad_calls": adv[i].get("grad_calls"),
                "queries": adv[i].get("queries"),
            }
            for q in QUALITY_METRICS:
                row[f"q_{q}_c_a"] = q_ca[q][i]
                row[f"q_{q}_c_dc"] = dc[q]
                row[f"q_{q}_c_da"] = q_cda[q][j]
            rows.append(row)
        return rows

    def _adaptive(self, metric, m_spec, a_spec, d_spec, defense, ids, x, ref) -> torch.Tensor:
        """The attack run again *through* the defense, from the clean images (cached like the transfer one).

        White-box: against ``adaptive(defense, metric)`` (BPDA / EOT); black-box: against
        ``defense.protect(metric)`` with fresh draws per query (what a deployed defense answers).
        Trainable attacks are fitted through the same target, on the training split.
        """
        plan = self.plan
        keys = [plan.adaptive_key(m_spec, a_spec, d_spec, img) for img in ids]
        tag = plan.adaptive_tag(a_spec, d_spec)
        white = plan.white_box.get(a_spec, True)
        target = make_adaptive(defense, metric, plan.wrapper, plan.eot_k) if white else defense.protect(metric)
        if not white:
            target.seeds = None
        cost = getattr(target, "grad_cost", 1)
        ck = (m_spec, a_spec, d_spec)

        def make_attack():
            attack = self._adaptive_attacks.get(ck)
            if attack is None:
                attack = ATTACKS.create(a_spec)
                if plan.trainable.get(a_spec):
                    sub = hashlib.sha256(f"{d_spec}\x1f{tag}".encode()).hexdigest()[:12]
                    attack = self._fit(attack, target, self.out_dir / "trainable" / f"adaptive-{sub}")
                self._adaptive_attacks[ck] = attack
            return attack

        label = f"{a_spec} @ {d_spec} [{tag}]"
        x_ad, _ = self._attack_cached(keys, target, make_attack, m_spec, label, ids, x, ref, grad_cost=cost)
        return x_ad

    def _train_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training split (dataset images not evaluated), loaded once and resized to one shape."""
        if self._train is None:
            xs, refs = [], []
            for it in self.plan.train_items:
                xs.append(check_image(it.load(), f"training image {it.id!r}"))
                refs.append(it.load_ref() if it.load_ref is not None else None)
            size = xs[0].shape[-2:]
            fit = lambda t: t if t.shape[-2:] == size else F.interpolate(  # noqa: E731
                t, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
            x = torch.cat([fit(t) for t in xs]).to(self.device)
            ref = torch.cat([fit(r) for r in refs]).to(self.device) if all(r is not None for r in refs) else None
            self._train = (x, ref)
        return self._train

    def _fit(self, attack, metric, cache_dir: Path):
        """Fit a trainable attack on the training split (cached under ``<out>/trainable/``)."""
        x, ref = self._train_batch()
        ref = ref if getattr(metric, "mode", "NR") == "FR" else None
        torch.manual_seed(derive_seed(self.plan.seed, "fit", canonical_or_name(attack), str(cache_dir.name)))
        return fit_or_load(attack, metric, x, cache_dir, ref=ref)

    def _probe(self, metric, m_spec, defenses, done) -> None:
        """Honesty probes per (metric, defense), on the first two images: the gradient norm of the
        attack objective through ``metric ∘ defense`` (and through the adaptive wrapper), and how
        much the defended score of a fixed input moves between two random draws."""
        from .flags import probe_key

        plan = self.plan
        todo = {}
        for d_spec in plan.defenses:
            if all(plan.cell_key(m_spec, a, d_spec, img) in done for a in plan.attacks for img in plan.image_ids):
                continue
            todo[d_spec] = probe_key(plan, m_spec, d_spec)
        if not todo:
            return
        have = set(self.store.probes(todo.values())["key"])
        ids = plan.image_ids[:2]
        groups = None
        records = []
        for d_spec, key in todo.items():
            if key in have:
                continue
            if groups is None:
                groups = self._by_shape(ids)
            ids_, x, ref = groups[0]
            ref = ref if metric.mode == "FR" else None
            records.append({"key": key, "metric": m_spec, "defense": d_spec, "dataset": plan.dataset,
                            "run_id": self.run_id, "images": len(ids_),
                            **_probe_one(metric, defenses[d_spec], x, ref, plan, d_spec, m_spec, ids_)})
        if records:
            self.store.write_probes(records)

    def _defended_clean(self, metric, m_spec, d_spec, defense, ids, x, ref, seeds) -> list[dict[str, Any]]:
        missing = [i for i, img in enumerate(ids) if (m_spec, d_spec, img) not in self._dc_cache]
        if missing:
            with torch.no_grad():
                xs = x[missing]
                rs = None if ref is None else ref[missing]
                t0 = time.perf_counter()
                y, ry = defense.purify_pair(xs, rs, [seeds[i] for i in missing])
                secs = (time.perf_counter() - t0) / len(missing)
                dc = self._score(metric, y, ry)
                q = self._quality(xs, _to_size(y, xs), m_spec)
            for j, i in enumerate(missing):
                self._dc_cache[(m_spec, d_spec, ids[i])] = {
                    "score": float(dc[j]), "seconds": secs, **{k: v[j] for k, v in q.items()}}
        return [self._dc_cache[(m_spec, d_spec, img)] for img in ids]

    @staticmethod
    def _score(metric, y, ref):
        return metric(y) if ref is None else metric(y, ref)

    def _quality(self, x: torch.Tensor, y: torch.Tensor, target: str) -> dict[str, list[float | None]]:
        """PSNR/SSIM/MS-SSIM between clean and processed images; never the attacked metric itself."""
        out: dict[str, list[float | None]] = {}
        target_name = target.split(":")[0]
        for name, q in self.quality.items():
            if name == target_name:
                out[name] = [None] * x.shape[0]
                continue
            try:
                vals = q(y, x)
                out[name] = [float(v) for v in vals]
            except InputError:  # e.g. MS-SSIM on images smaller than its five scales need
                out[name] = [None] * x.shape[0]
        return out

    def _save_strip(self, m_spec, a_spec, d_spec, ids, sel, keys, ya) -> None:
        """Keep the defended-attacked image of the first dataset image of each cell, for the report."""
        first = self.plan.image_ids[0]
        for j, i in enumerate(sel):
            if ids[i] == first:
                save_png(ya[j:j + 1].clamp(0, 1).cpu(), self.out_dir / "defended" / f"{keys[i]}.png")

    def _key_fields(self, m, a, d, img, key) -> dict[str, Any]:
        return {"cell": key, "run_id": self.run_id, "metric": m, "attack": a, "defense": d,
                "dataset": self.plan.dataset, "image": img}


def canonical_or_name(obj) -> str:
    return f"{getattr(obj, 'name', '')}:{sorted((getattr(obj, 'params', {}) or {}).items())}"


def _gain(metric, s: torch.Tensor) -> torch.Tensor:
    """The default attack objective: score toward 'better', over the range (attacks/base.py)."""
    return (-s if metric.lower_better else s) / metric.range_width


def _probe_one(metric, defense, x, ref, plan: Plan, d_spec: str, m_spec: str, ids) -> dict[str, Any]:
    note = []
    seeds = [derive_seed(plan.seed, m_spec, d_spec, img) for img in ids]
    out: dict[str, Any] = {"grad_norm": float("nan"), "grad_finite": float("nan"),
                           "adaptive_grad_norm": float("nan"), "wrapper": None, "score_spread": float("nan")}
    protected = defense.protect(metric)
    protected.seeds = seeds
    if metric.differentiable:
        xg = x.detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                s = protected(xg, ref) if ref is not None else protected(xg)
                if not s.requires_grad:
                    raise RuntimeError("no graph")
                (g,) = torch.autograd.grad(_gain(metric, s).sum(), xg, allow_unused=True)
            if g is None:
                raise RuntimeError("unused")
            out["grad_finite"] = float(torch.isfinite(g).all())
            out["grad_norm"] = float(torch.nan_to_num(g, nan=0.0).flatten(1).norm(dim=1).mean())
        except RuntimeError:
            out["grad_norm"], out["grad_finite"] = 0.0, 1.0
            note.append("no gradient through the defense (not differentiable)")
        if d_spec in plan.adaptive:
            am = make_adaptive(defense, metric, plan.wrapper, plan.eot_k)
            out["wrapper"] = am.wrapper
            torch.manual_seed(derive_seed(plan.seed, "probe", m_spec, d_spec))
            xg = x.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                s = am(xg, ref) if ref is not None else am(xg)
                (g,) = torch.autograd.grad(_gain(metric, s).sum(), xg)
            out["adaptive_grad_norm"] = float(torch.nan_to_num(g, nan=0.0).flatten(1).norm(dim=1).mean())
    with torch.no_grad():
        protected.seeds = [derive_seed(plan.seed, "probe-a", img) for img in ids]
        s1 = protected(x, ref) if ref is not None else protected(x)
        protected.seeds = [derive_seed(plan.seed, "probe-b", img) for img in ids]
        s2 = protected(x, ref) if ref is not None else protected(x)
    out["score_spread"] = float((s1 - s2).abs().max()) / metric.range_width
    out["note"] = "; ".join(note) or None
    return out


def _to_size(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Defended images are compared with the clean one at the input size (as the study does)."""
    if y.shape[-2:] == x.shape[-2:]:
        return y
    return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)


def _chunks(seq: Sequence[str], n: int) -> Iterable[list[str]]:
    for i in range(0, len(seq), n):
        yield list(seq[i:i + n])


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


# -- outputs ------------------------------------------------------------------------------------

def collect(st: Store, plan: Plan, data, out_dir: Path, prov: dict[str, Any], report: bool = True) -> Result:
    """Read the plan's rows back from the store, score them and write the output files."""
    from . import scores

    keys = [c[4] for c in plan.cells()]
    rows = st.rows(keys=keys)
    rows = _in_plan_order(rows, plan)
    summary = scores.summarize(rows, seed=plan.seed) if len(rows) else pd.DataFrame()
    worst = scores.worst_case(rows, seed=plan.seed) if len(rows) else pd.DataFrame()
    two = scores.two_axis(summary) if len(summary) else pd.DataFrame()
    from .flags import compute_flags, annotate

    flags = compute_flags(summary, st.probes([probe_key(plan, m, d) for m in plan.metrics for d in plan.defenses]),
                          plan) if len(summary) else pd.DataFrame(columns=FLAG_COLUMNS)
    summary = annotate(summary, flags, rows) if len(summary) else summary
    worst = annotate_worst(worst, summary) if len(worst) else worst
    files: dict[str, Path] = {"store": st.path}
    for name, frame in (("results", rows), ("summary", summary), ("worst", worst), ("two_axis", two),
                        ("flags", flags)):
        files[name] = _write_csv(frame, out_dir / _OUTPUTS[name])
    prov = {**prov, "finished": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds")}
    if report:
        from ..report import render_report

        short = _short_names(plan)
        strips = _strips(plan, data, out_dir, rows)
        for strip in strips:
            strip.update({k: short.get(strip[k], strip[k]) for k in ("metric", "attack", "defense")})
        files["report"] = render_report(_shorten(rows, short), _shorten(summary, short), prov, out_dir,
                                        strips=strips, two_axis=_shorten(two, short), worst=_shorten(worst, short),
                                        flags=_shorten(flags, short))
    return Result(rows, summary, worst, two, prov.get("run_id", ""), out_dir, st.path, prov, files=files,
                  flags=flags)


def _short_names(plan: Plan) -> dict[str, str]:
    """Canonical spec -> display spec (non-default parameters only), for the report."""
    out = {}
    for reg, specs in ((METRICS, plan.metrics), (ATTACKS, plan.attacks), (DEFENSES, plan.defenses)):
        out.update({s: short_spec(reg, s) for s in specs})
    return out


def _shorten(df: pd.DataFrame, short: dict[str, str]) -> pd.DataFrame:
    cols = [c for c in ("metric", "attack", "defense") if c in df.columns]
    return df.assign(**{c: df[c].map(lambda v: short.get(v, v)) for c in cols}) if cols else df


def _in_plan_order(rows: pd.DataFrame, plan: Plan) -> pd.DataFrame:
    if not len(rows):
        return rows
    order = {k: i for i, k in enumerate(c[4] for c in plan.cells())}
    return rows.assign(_o=rows["cell"].map(order)).sort_values("_o").drop(columns="_o").reset_index(drop=True)


def _write_csv(df: pd.DataFrame, path: Path) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _strips(plan: Plan, data, out_dir: Path, rows: pd.DataFrame, limit: int = 24) -> list[dict[str, Any]]:
    """Clean / attacked / defended images of the first dataset image, per cell (for the report)."""
    if not len(rows):
        return []
    first = plan.image_ids[0]
    item = next(it for it in data.items if it.id == first)
    clean_path = out_dir / "clean" / "first.png"
    if not clean_path.exists():
        save_png(item.load(), clean_path)
    strips = []
    for r in rows[rows["image"] == first].itertuples():
        adv = out_dir / "adversarial" / f"{plan.attack_key(r.metric, r.attack, first)}.png"
        dfd = out_dir / "defended" / f"{r.cell}.png"
        if not (adv.exists() and dfd.exists()):
            continue
        strips.append({"metric": r.metric, "attack": r.attack, "defense": r.defense, "image": first,
                       "clean": clean_path, "attacked": adv, "defended": dfd,
                       "scores": {"clear": r.clear, "attacked": r.attacked,
                                  "defended_attacked": r.defended_attacked}})
        if len(strips) >= limit:
            break
    return strips


def report_from_store(store: str | Path, out: str | Path | None = None) -> Result:
    """Rebuild results.csv, summary.csv and index.html from the last run in a store."""
    store = Path(store)
    if not store.exists():
        raise InputError(f"store {str(store)!r} does not exist")
    with Store(store) as st:
        last = st.last_run()
        if last is None:
            raise InputError(f"store {str(store)!r} holds no run")
        spec = last["spec"]
        plan, data = make_plan(spec["metrics"], spec["attacks"], spec["defenses"], spec["dataset"],
                               spec.get("limit"), spec["seed"], adaptive=spec.get("adaptive") or False,
                               wrapper=spec.get("wrapper", "auto"), eot_k=spec.get("eot_k", 10),
                               train_images=spec.get("train_images", 32),
                               adaptive_limit=spec.get("adaptive_limit"))
        plan.extra = {k: v for k, v in spec.items() if k == "suite"}
        out_dir = Path(out) if out is not None else store.parent
        out_dir.mkdir(parents=True, exist_ok=True)
        if out_dir.resolve() != store.parent.resolve():
            _copy_artifacts(store.parent, out_dir)
        return collect(st, plan, data, out_dir, last["provenance"])


def _copy_artifacts(src: Path, dst: Path) -> None:
    import shutil

    for sub in ("adversarial", "defended", "clean"):
        if (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, dirs_exist_ok=True)
