"""Execute one task: attack once, then score every defense of the batch through its family.

A worker holds the models it has built (metrics, defenses, fitted states) and per-image caches,
and returns everything it computed as a :class:`TaskResult`; it never writes to the store.
"""
from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..fitting import fit_or_load, spec_of
from ..images import check_image, load_image, save_png
from ..registry import ATTACKS, DEFENSES, METRICS
from ..seeds import derive_seed
from .families import FAMILIES
from .quality import psnr_rgb, ssim_rgb
from .rows import LUMA_QUALITY, QUALITY_METRICS
from .tasks import Task, TaskResult


# the scores a finished cell must have finite (certificate bounds may be ±inf: abstained)
SCORE_COLUMNS = ("clear", "attacked", "defended_clear", "defended_attacked", "defended_attacked_adaptive")


class Worker:
    def __init__(self, plan, items: dict[str, Any], out_dir: Path, run_id: str, device: str,
                 progress: bool = False):
        self.plan, self.items, self.out_dir, self.run_id = plan, items, Path(out_dir), run_id
        self.progress = progress
        self.device = torch.device(device)
        self.luma = {q: METRICS.create(spec).to(self.device).eval() for q, spec in LUMA_QUALITY.items()}
        self._metrics: dict[str, Any] = {}
        self._defenses: dict[str, Any] = {}
        self._protected: dict[tuple[str, str], Any] = {}
        self._dc: dict[tuple[str, str, str], dict[str, Any]] = {}     # defended clean, per image
        self._fitted: dict[tuple[str, str], Any] = {}
        self._train: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # -- models, built once per worker --------------------------------------------------------
    def metric(self, spec: str):
        if spec not in self._metrics:
            self._metrics[spec] = METRICS.create(spec).to(self.device).eval()
        return self._metrics[spec]

    def defense(self, spec: str):
        if spec not in self._defenses:
            self._defenses[spec] = DEFENSES.create(spec)
        return self._defenses[spec]

    def protected(self, m_spec: str, d_spec: str):
        key = (m_spec, d_spec)
        if key not in self._protected:
            fam = FAMILIES[self.plan.families[d_spec]]
            self._protected[key] = fam.protect(self.defense(d_spec), self.metric(m_spec), self)
        return self._protected[key]

    def fit_defense(self, defense, metric) -> None:
        """Fit a trained defense on the training split, cached under ``<out>/trainable/`` (where
        ``iqaguard train-defense`` puts it too), with a progress bar when the run shows one."""
        x, ref = self._train_batch()
        ref = ref if metric.mode == "FR" else None
        items = self.plan.train_items
        if hasattr(defense, "set_truth") and items and all(it.truth_kind == "mos" and it.truth is not None
                                                          for it in items):
            defense.set_truth([float(it.truth) for it in items])   # MOS targets; else self-distillation
        torch.manual_seed(derive_seed(self.plan.seed, "fit-defense", spec_of(defense), spec_of(metric)))
        bar = None
        if self.progress and hasattr(defense, "total_steps") and hasattr(defense, "on_step"):
            from tqdm.auto import tqdm

            bar = tqdm(total=defense.total_steps(x.shape[0]), unit="step", dynamic_ncols=True, leave=False,
                       desc=f"training {defense.name} on {metric.name}")
            defense.on_step = lambda: bar.update(1)
        try:
            fit_or_load(defense, metric, x, self.out_dir / "trainable", ref=ref)
        finally:
            if bar is not None:
                defense.on_step = None
                bar.close()

    def _fit_attack(self, attack, metric, cache_dir: Path):
        x, ref = self._train_batch()
        ref = ref if getattr(metric, "mode", "NR") == "FR" else None
        torch.manual_seed(derive_seed(self.plan.seed, "fit", spec_of(attack), str(cache_dir.name)))
        return fit_or_load(attack, metric, x, cache_dir, ref=ref)

    def _train_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training split, loaded once exactly as ``iqaguard train-defense`` loads it (same
        images, same resize), so a state trained ahead has the key the run looks up."""
        if self._train is None:
            from ..defenses.training.command import training_batch

            x, ref = training_batch(self.plan.train_items)
            self._train = (x.to(self.device), None if ref is None else ref.to(self.device))
        return self._train

    # -- a task -------------------------------------------------------------------------------
    def run(self, task: Task) -> TaskResult:
        res = TaskResult()
        metric = self.metric(task.metric)
        if task.probe:
            res.probes = self._probes(metric, task)
        attack = None
        for img in task.images:
            try:
                ids, x, ref = self._load([img])
                ref = ref if metric.mode == "FR" else None
                if attack is None:
                    attack = self._attack(task.attack, metric)
            except Exception as exc:  # an unreadable image or an attack that cannot be built or fitted
                self._fail(task, [img], exc, res)
                continue
            self._group(metric, attack, task, ids, x, ref, res)
        return res

    def _attack(self, a_spec: str, metric):
        attack = ATTACKS.create(a_spec)
        if self.plan.trainable.get(a_spec):
            attack = self._fit_attack(attack, metric, self.out_dir / "trainable")
        return attack

    def _load(self, ids: Sequence[str]) -> tuple[list[str], torch.Tensor, torch.Tensor | None]:
        """Load same-size images as one batch (with their references when every one has one).

        ``run`` computes one image at a time: no computation ever sees another image, so a
        per-image result never depends on batch size, batch composition, order or executor (CPU
        kernels may pick other blockings for other batch sizes and change the last bits)."""
        xs, refs = [], []
        for img in ids:
            item = self.items[img]
            xs.append(check_image(item.load(), f"image {img!r}"))
            refs.append(item.load_ref() if item.load_ref is not None else None)
        x = torch.cat(xs).to(self.device)
        ref = torch.cat(refs).to(self.device) if all(r is not None for r in refs) else None
        return list(ids), x, ref

    def _fail(self, task: Task, ids: Sequence[str], exc: BaseException | str, res: TaskResult) -> None:
        """Every pending cell of ``ids`` in this task fails with ``exc``: a failing attack, metric
        or image loses its cells, not the run."""
        msg = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        for d_spec in task.defenses:
            fields = [self._key_fields(task.metric, task.attack, d_spec, img, k) for img in ids
                      if (k := self.plan.cell_key(task.metric, task.attack, d_spec, img)) in task.pending]
            if fields:
                res.errors.append((fields, msg))

    def _group(self, metric, attack, task: Task, ids, x, ref, res: TaskResult) -> None:
        m_spec, a_spec = task.metric, task.attack
        try:
            with torch.no_grad():
                clean = _finite(_score(metric, x, ref), "clean score")
            keys = [self.plan.attack_key(m_spec, a_spec, img) for img in ids]
            x_adv, adv = self._cached_attack(keys, metric, lambda: attack, m_spec, a_spec, ids, x, ref, task, res)
            with torch.no_grad():
                attacked = _finite(_score(metric, x_adv, ref), "attacked score")
        except Exception as exc:
            self._fail(task, ids, exc, res)
            return
        shared = {"clean": clean, "attacked": attacked, "x_adv": x_adv, "adv": adv,
                  "q_ca": self._quality(x, x_adv, m_spec), "norms": _norms(x_adv, x)}
        for d_spec in task.defenses:
            cell_keys = [self.plan.cell_key(m_spec, a_spec, d_spec, img) for img in ids]
            sel = [i for i, k in enumerate(cell_keys) if k in task.pending]
            if not sel:
                continue
            try:
                rows = self._cell(metric, task, d_spec, ids, cell_keys, sel, x, ref, shared, res)
            except Exception as exc:  # a failing method (or an image it cannot take) loses its cells, not the run
                fields = [self._key_fields(m_spec, a_spec, d_spec, ids[i], cell_keys[i]) for i in sel]
                res.errors.append((fields, f"{type(exc).__name__}: {exc}"))
                continue
            for row in rows:      # a NaN/Inf score is a failure, never a finished cell
                bad = [c for c in SCORE_COLUMNS if row.get(c) is not None and not math.isfinite(row[c])]
                if bad:
                    fields = [{k: row[k] for k in ("cell", "run_id", "metric", "attack", "defense", "dataset", "image")}]
                    res.errors.append((fields, f"non-finite {bad[0]} ({row[bad[0]]})"))
                else:
                    res.rows.append(row)

    def _cell(self, metric, task, d_spec, ids, keys, sel, x, ref, shared, res) -> list[dict[str, Any]]:
        plan, m_spec, a_spec = self.plan, task.metric, task.attack
        defense = self.defense(d_spec)
        fam = FAMILIES[plan.families[d_spec]]
        protected = self.protected(m_spec, d_spec)
        seeds = [derive_seed(plan.seed, m_spec, d_spec, ids[i]) for i in sel]
        xs, xa = x[sel], shared["x_adv"][sel]
        refs = None if ref is None else ref[sel]
        dc = self._defended_clean(fam, defense, protected, m_spec, d_spec, [ids[i] for i in sel], xs, refs, seeds)
        da = fam.score(protected, xa, refs, seeds, self)
        tags = [plan.adaptive_tag(a_spec, d_spec, ids[i]) for i in sel]
        dad: list[float | None] = [None] * len(sel)
        ad_norms: dict[str, list[float | None]] = {"linf_c_ad": [None] * len(sel), "l2_c_ad": [None] * len(sel)}
        if plan.identity.get(d_spec):    # the transfer attack already attacked exactly this metric
            dad = [float(v) for v in da.scores]
            tags = ["direct"] * len(sel)
        sub = [j for j, t in enumerate(tags) if t and t != "direct"]
        if sub:
            r_sub = None if refs is None else refs[sub]
            x_ad = self._adaptive(metric, protected, fam, defense, m_spec, a_spec, d_spec,
                                  [ids[sel[j]] for j in sub], xs[sub], r_sub, task, res)
            sc = fam.score(protected, x_ad, r_sub, [seeds[j] for j in sub], self)
            nrm = _norms(x_ad, xs[sub])
            for jj, j in enumerate(sub):
                dad[j] = float(sc.scores[jj])
                ad_norms["linf_c_ad"][j], ad_norms["l2_c_ad"][j] = nrm["linf"][jj], nrm["l2"][jj]
        q_cda: dict[str, list] = {}
        if fam.has_images:
            q_cda = self._quality(defense.align(xs, seeds), da.images, m_spec)
            self._save_strip(ids, sel, keys, da.images)
        cost = fam.cost_columns(defense, self)
        rows = []
        for j, i in enumerate(sel):
            item, d0, adv = self.items[ids[i]], dc[j], shared["adv"][i]
            row = {
                **self._key_fields(m_spec, a_spec, d_spec, ids[i], keys[i]), "family": fam.name,
                "clear": float(shared["clean"][i]), "attacked": float(shared["attacked"][i]),
                "defended_clear": d0["score"], "defended_attacked": float(da.scores[j]),
                "defended_attacked_adaptive": dad[j],
                "truth": item.truth, "truth_kind": item.truth_kind, "group": item.group,
                "linf_c_a": shared["norms"]["linf"][i], "l2_c_a": shared["norms"]["l2"][i],
                "linf_c_ad": ad_norms["linf_c_ad"][j], "l2_c_ad": ad_norms["l2_c_ad"][j],
                "lower_better": bool(metric.lower_better), "range_lo": metric.score_range[0],
                "range_hi": metric.score_range[1], "seed": plan.seed, "adaptive_wrapper": tags[j] or None,
                "defense_seconds": (d0["seconds"] + da.seconds) / 2,
                "defense_forwards": (d0["forwards"] + da.forwards) / 2,
                "attack_seconds": adv.get("attack_seconds"), "grad_calls": adv.get("grad_calls"),
                "queries": adv.get("queries"), **cost, **d0["extra"],
            }
            for q in QUALITY_METRICS:
                row[f"q_{q}_c_a"] = shared["q_ca"][q][i]
                row[f"q_{q}_c_dc"] = d0.get(f"q_{q}")
                row[f"q_{q}_c_da"] = q_cda[q][j] if q_cda else None
            rows.append(row)
        return rows

    def _defended_clean(self, fam, defense, protected, m_spec, d_spec, ids, x, ref, seeds) -> list[dict[str, Any]]:
        """Defended-clean results do not depend on the attack: computed once per (metric, defense, image)."""
        missing = [i for i, img in enumerate(ids) if (m_spec, d_spec, img) not in self._dc]
        if missing:
            xs = x[missing]
            rs = None if ref is None else ref[missing]
            sd = [seeds[i] for i in missing]
            d = fam.score_clean(protected, xs, rs, sd, self)
            q = self._quality(defense.align(xs, sd), d.images, m_spec) if fam.has_images else {}
            for j, i in enumerate(missing):
                self._dc[(m_spec, d_spec, ids[i])] = {
                    "score": float(d.scores[j]), "seconds": d.seconds, "forwards": d.forwards,
                    "extra": {k: v[j] for k, v in d.extra.items()},
                    **{f"q_{k}": v[j] for k, v in q.items()}}
        return [self._dc[(m_spec, d_spec, img)] for img in ids]

    # -- attacks, cached as 8-bit PNGs --------------------------------------------------------
    def _cached_attack(self, keys, target, make_attack, m_spec, label, ids, x, ref, task, res, grad_cost=1):
        """Attack ``target`` for the images whose ``keys`` are not cached yet (``make_attack()`` is
        called only then, so a fully cached batch never builds or fits the attack)."""
        adv_dir = self.out_dir / "adversarial"
        x_adv = torch.empty_like(x)
        missing = []
        for i, k in enumerate(keys):
            rec = task.cached_adv.get(k)
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
            out = attack.quantize(attack(target, xs, refs), xs)
            n, stats = len(missing), attack.stats
            for j, i in enumerate(missing):
                x_adv[i] = out[j]
                path = save_png(out[j:j + 1].cpu(), adv_dir / f"{keys[i]}.png")
                rec = {"key": keys[i], "metric": m_spec, "attack": label, "dataset": self.plan.dataset,
                       "image": ids[i], "path": str(path.relative_to(self.out_dir)),
                       "attack_seconds": stats.seconds / n, "grad_calls": stats.grad_calls * grad_cost,
                       "queries": stats.queries / n, "run_id": self.run_id}
                res.adversarial.append(rec)
                task.cached_adv[keys[i]] = rec
        return x_adv, [task.cached_adv[k] for k in keys]

    def _adaptive(self, metric, protected, fam, defense, m_spec, a_spec, d_spec, ids, x, ref, task, res):
        """The attack run again against the protected metric itself (cached like the transfer one).

        White-box: the family's adaptive target (direct, BPDA, EOT); black-box: the deployed defense
        with fresh draws per query. Trainable attacks are fitted through the same target."""
        plan = self.plan
        keys = [plan.adaptive_key(m_spec, a_spec, d_spec, img) for img in ids]
        tag = plan.adaptive_tag(a_spec, d_spec)
        white = plan.white_box.get(a_spec, True)
        target = (fam.adaptive_target(defense, metric, protected, plan) if white
                  else fam.query_target(defense, metric, fam.protect(defense, metric, self)))
        cost = getattr(target, "grad_cost", 1)

        def make_attack():
            ck = (m_spec, a_spec, d_spec)
            if ck not in self._fitted:
                attack = ATTACKS.create(a_spec)
                if plan.trainable.get(a_spec):
                    sub = hashlib.sha256(f"{d_spec}\x1f{tag}".encode()).hexdigest()[:12]
                    attack = self._fit_attack(attack, target, self.out_dir / "trainable" / f"adaptive-{sub}")
                self._fitted[ck] = attack
            return self._fitted[ck]

        label = f"{a_spec} @ {d_spec} [{tag}]"
        x_ad, _ = self._cached_attack(keys, target, make_attack, m_spec, label, ids, x, ref, task, res, cost)
        return x_ad

    # -- quality, strips, probes --------------------------------------------------------------
    def _quality(self, x: torch.Tensor, y: torch.Tensor, target: str) -> dict[str, list[float | None]]:
        """Quality between the (aligned) clean image and a processed one, at the clean image's size.
        The study's RGB SSIM/PSNR always; the luma columns never for the attacked metric itself."""
        if y.shape[-2:] != x.shape[-2:]:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False).clamp(0, 1)
        n = x.shape[0]
        out: dict[str, list[float | None]] = {}
        try:
            out["ssim_rgb"] = [float(v) for v in ssim_rgb(y, x)]
        except ValueError:
            out["ssim_rgb"] = [None] * n
        out["psnr_rgb"] = [float(v) for v in psnr_rgb(y, x)]
        target_name = target.split(":")[0]
        for name, q in self.luma.items():
            if name == target_name:
                out[name] = [None] * n
                continue
            try:
                with torch.no_grad():
                    out[name] = [float(v) for v in q(y, x)]
            except InputError:  # e.g. MS-SSIM on images smaller than its five scales need
                out[name] = [None] * n
        return out

    def _save_strip(self, ids, sel, keys, images) -> None:
        """Keep the defended-attacked image of the first dataset image of each cell, for the report."""
        first = self.plan.image_ids[0]
        for j, i in enumerate(sel):
            if ids[i] == first:
                save_png(images[j:j + 1].clamp(0, 1).cpu(), self.out_dir / "defended" / f"{keys[i]}.png")

    def _probes(self, metric, task: Task) -> list[dict[str, Any]]:
        from .flags import probe_key
        from .probes import probe

        first = self.plan.image_ids[:2]
        try:
            ids_, x, ref = self._load(first)
        except RuntimeError:      # the first two images differ in size: probe on the first alone
            ids_, x, ref = self._load(first[:1])
        ref = ref if metric.mode == "FR" else None
        out = []
        for d_spec in task.probe:
            rec = {"key": probe_key(self.plan, task.metric, d_spec), "metric": task.metric, "defense": d_spec,
                   "dataset": self.plan.dataset, "run_id": self.run_id, "images": len(ids_)}
            try:
                rec.update(probe(self, metric, task.metric, d_spec, x, ref, ids_))
            except Exception as exc:  # a probe that fails is recorded, the cells still run
                rec.update({"note": f"probe failed: {type(exc).__name__}: {exc}"})
            out.append(rec)
        return out

    def _key_fields(self, m, a, d, img, key) -> dict[str, Any]:
        return {"cell": key, "run_id": self.run_id, "metric": m, "attack": a, "defense": d,
                "dataset": self.plan.dataset, "image": img}


def _score(metric, x, ref):
    return metric(x) if ref is None else metric(x, ref)


def _finite(scores: torch.Tensor, what: str) -> torch.Tensor:
    if not bool(torch.isfinite(scores).all()):
        raise FloatingPointError(f"non-finite {what} ({scores.tolist()})")
    return scores


def _norms(x_adv: torch.Tensor, x: torch.Tensor) -> dict[str, list[float]]:
    d = (x_adv - x).flatten(1)
    return {"linf": [float(v) for v in d.abs().amax(1)], "l2": [float(v) for v in d.norm(dim=1)]}
