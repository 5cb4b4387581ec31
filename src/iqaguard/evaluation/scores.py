"""Aggregate scores: from per-image rows (``rows.py``) to one row per cell, worst case, two axes.

Formulas follow the reference study (STUDY.md §5 "Scores") plus the extensions documented in
``docs/methods/scores.md``: signed direction-aware gains, PLCC/KROCC, bootstrap CIs, the
per-image worst case over attacks, and the fidelity/quality summary with its Pareto front.

Everything is vectorised over rows: means are group sums, correlations are group moments (ranks
for SROCC, pairwise signs for KROCC), and bootstrap resamples are a count matrix times per-image
sums, so no Python loop runs per resample or per row.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iqaguard.errors import InputError
from iqaguard.evaluation.rows import CELL_COLUMNS
from iqaguard.seeds import derive_seed

__all__ = ["summarize", "worst_case", "two_axis", "PSNR_CAP_DB", "REL_EPS", "BOOT_SCORES", "CORR_COLUMNS"]

PSNR_CAP_DB = 100.0
"""PSNR is clipped here before SSIM + PSNR/40 so identical images (PSNR = inf) stay finite."""
REL_EPS = 1e-6
"""The study's epsilon in relative gains, |c − x| / (|c| + REL_EPS)."""
CI_LEVEL = 0.95
BOOT_SCORES = ["robust_abs_gain", "nonpurified_abs_gain", "attack_gain", "defended_gain",
               "similarity_score", "robust_abs_gain_adaptive"]
"""Scores that get ``<score>_lo`` / ``<score>_hi`` percentile-bootstrap columns."""
_CORR_TARGETS = ("clear", "attacked", "defended_clear", "defended_attacked")
CORR_COLUMNS = [f"{k}_{n}" for k in ("srocc", "plcc", "krocc") for n in _CORR_TARGETS] \
    + ["srocc_clear_vs_defended_clear"]
_REQUIRED = ["clear", "attacked", "defended_clear", "defended_attacked",
             "lower_better", "range_lo", "range_hi", "image"]
_KENDALL_PAIRWISE_MAX = 64     # groups up to this size use the vectorised pairwise tau-b
_KENDALL_CHUNK_ELEMS = 4_000_000


# ----------------------------------------------------------------------------- validation
def _col(rows: pd.DataFrame, name: str) -> np.ndarray:
    """A float64 column; NaN everywhere when an optional column is absent."""
    if name not in rows.columns:
        return np.full(len(rows), np.nan)
    try:
        return pd.to_numeric(rows[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError) as exc:
        raise InputError(f"rows: column {name!r} must be numeric ({exc})") from None


def _check(rows: object, by: Sequence[str]) -> pd.DataFrame:
    if not isinstance(rows, pd.DataFrame):
        raise InputError(f"rows: expected a pandas DataFrame, got {type(rows).__name__}")
    missing = [c for c in list(_REQUIRED) + list(by) if c not in rows.columns]
    if missing:
        raise InputError(f"rows: missing column(s) {missing}")
    if len(by) == 0:
        raise InputError("by: give at least one column to group on")
    lb = rows["lower_better"]
    if lb.isna().any():
        raise InputError("rows: column 'lower_better' has missing values")
    rng = _col(rows, "range_hi") - _col(rows, "range_lo")
    if not np.all(np.isfinite(rng) & (rng > 0)):
        raise InputError("rows: range_hi − range_lo must be finite and > 0 on every row")
    return rows


def _sign(rows: pd.DataFrame) -> np.ndarray:
    """s = −1 for lower-better metrics, +1 otherwise (so s·score is 'higher = better')."""
    lb = rows["lower_better"]
    if pd.api.types.is_bool_dtype(lb) or pd.api.types.is_numeric_dtype(lb):
        flag = lb.to_numpy().astype(bool)
    else:
        flag = lb.astype(str).str.strip().str.lower().isin(["1", "true", "1.0", "yes"]).to_numpy()
    return np.where(flag, -1.0, 1.0)


def _image_key(rows: pd.DataFrame) -> list[str]:
    return ["dataset", "image"] if "dataset" in rows.columns else ["image"]


# ----------------------------------------------------------------------------- per-row values
def _similarity(ssim: np.ndarray, psnr: np.ndarray) -> np.ndarray:
    """SSIM + min(PSNR, 100 dB)/40 per image; NaN where either is NaN."""
    return ssim + np.minimum(psnr, PSNR_CAP_DB) / 40.0


def _per_row(rows: pd.DataFrame) -> pd.DataFrame:
    """Every per-image quantity whose group mean is a score."""
    c, a = _col(rows, "clear"), _col(rows, "attacked")
    dc, da = _col(rows, "defended_clear"), _col(rows, "defended_attacked")
    dad = _col(rows, "defended_attacked_adaptive")
    r = _col(rows, "range_hi") - _col(rows, "range_lo")
    s = _sign(rows)
    rel = np.abs(c) + REL_EPS
    reld = np.abs(dc) + REL_EPS
    with np.errstate(invalid="ignore"):
        out = {
            "robust_abs_gain": np.abs(c - da) / r,
            "robust_rel_gain": np.abs(c - da) / rel,
            "nonpurified_abs_gain": np.abs(c - a) / r,
            "nonpurified_rel_gain": np.abs(c - a) / rel,
            "both_defended_abs_gain": np.abs(dc - da) / r,
            "both_defended_rel_gain": np.abs(dc - da) / reld,
            "robust_abs_gain_adaptive": np.abs(c - dad) / r,
            "robust_rel_gain_adaptive": np.abs(c - dad) / rel,
            "both_defended_abs_gain_adaptive": np.abs(dc - dad) / r,
            "both_defended_rel_gain_adaptive": np.abs(dc - dad) / reld,
            "attack_gain": s * (a - c) / r,
            "defended_gain": s * (da - dc) / r,
            "defended_gain_adaptive": s * (dad - dc) / r,
            # the transfer gain on exactly the images that have an adaptive result (a paired comparison)
            "defended_gain_paired": np.where(np.isfinite(dad), s * (da - dc) / r, np.nan),
            "similarity_score": _similarity(_col(rows, "q_ssim_c_da"), _col(rows, "q_psnr_c_da")),
            "clear_similarity_score": _similarity(_col(rows, "q_ssim_c_dc"), _col(rows, "q_psnr_c_dc")),
            "mean_time": _col(rows, "defense_seconds"),
        }
    return pd.DataFrame(out, index=rows.index)


def _sums_counts(v: np.ndarray, gid: np.ndarray, ngroups: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-group sums and counts of the finite values of each column of ``v``."""
    ok = np.isfinite(v)
    vz = np.where(ok, v, 0.0)
    sums = np.stack([np.bincount(gid, vz[:, j], ngroups) for j in range(v.shape[1])], axis=1)
    cnts = np.stack([np.bincount(gid, ok[:, j], ngroups) for j in range(v.shape[1])], axis=1)
    return sums.reshape(ngroups, v.shape[1]), cnts.reshape(ngroups, v.shape[1]).astype(np.float64)


def _nan_mean_by(values: pd.DataFrame, gid: np.ndarray, ngroups: int) -> pd.DataFrame:
    """Group means ignoring NaN (NaN where a group has no finite value), without warnings."""
    sums, cnt = _sums_counts(values.to_numpy(dtype=np.float64), gid, ngroups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, sums / np.where(cnt > 0, cnt, 1.0), np.nan)
    return pd.DataFrame(mean, columns=values.columns)


# ----------------------------------------------------------------------------- bootstrap
def _boot_counts(n_img: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_img) resample counts: row b says how often each image is drawn in resample b.

    Seeded by (seed, n_img) only, so every group over the same sorted image set gets the same
    resamples (paired bootstrap: CIs of different defenses move together) and the result does
    not depend on which other groups are present.
    """
    rng = np.random.default_rng(derive_seed("bootstrap", seed, n_img))
    idx = rng.integers(0, n_img, size=(n_boot, n_img), dtype=np.int64)
    idx += (np.arange(n_boot, dtype=np.int64) * n_img)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n_img).reshape(n_boot, n_img).astype(np.float64)


def _boot_ci(sums: np.ndarray, cnts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile CI of ratio-of-sums means over resampled images (rows of ``sums``).

    A resample is a count vector k over images; its mean is (k·S)/(k·N), where S and N are the
    per-image sums and counts of finite values — exact for images with several rows.
    """
    k = sums.shape[1]
    both = counts @ np.hstack([sums, cnts])
    num, den = both[:, :k], both[:, k:]
    with np.errstate(invalid="ignore", divide="ignore"):
        est = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    alpha = (1.0 - CI_LEVEL) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanpercentile(est, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return lo, hi


def _boot_by_group(values: pd.DataFrame, rows: pd.DataFrame, gid: np.ndarray, ngroups: int,
                   n_boot: int, seed: int) -> pd.DataFrame:
    """``<score>_lo`` / ``<score>_hi`` for every column of ``values``, one row per group."""
    ikey = _image_key(rows)
    v = values.to_numpy(dtype=np.float64)
    img = _codes(rows, ikey, sort=True)     # sorted image order: paired resamples across groups
    _, pair = np.unique(gid * (int(img.max(initial=0)) + 1) + img, return_inverse=True)
    pair = pair.reshape(-1)
    npair = int(pair.max()) + 1 if len(pair) else 0
    sums, cnts = _sums_counts(v, pair, npair)
    pair_group = np.zeros(npair, dtype=np.int64)
    pair_group[pair] = gid
    bounds = np.searchsorted(pair_group, np.arange(ngroups + 1))   # pairs are sorted by group
    out = np.full((ngroups, 2 * v.shape[1]), np.nan)
    cache: dict[int, np.ndarray] = {}
    for g in range(ngroups):
        sl = slice(bounds[g], bounds[g + 1])
        n_img = bounds[g + 1] - bounds[g]
        if n_boot <= 0 or n_img == 0:
            continue
        if n_img not in cache:
            cache[n_img] = _boot_counts(int(n_img), n_boot, seed)
        out[g, 0::2], out[g, 1::2] = _boot_ci(sums[sl], cnts[sl], cache[n_img])
    cols = [f"{c}_{e}" for c in values.columns for e in ("lo", "hi")]
    return pd.DataFrame(out, columns=cols)


# ----------------------------------------------------------------------------- correlations
def _kendall_small(x: np.ndarray, y: np.ndarray, starts: np.ndarray, sizes: np.ndarray,
                   which: np.ndarray) -> np.ndarray:
    """Kendall tau-b for many small groups at once (rows sorted by gid).

    tau-b = Σ_{i<j} sign(xi−xj)·sign(yi−yj) / sqrt(Σ|sign(xi−xj)| · Σ|sign(yi−yj)|): the
    denominators are exactly (n0 − n1)(n0 − n2), the untied pair counts.
    """
    tau = np.full(len(which), np.nan)
    order = which[np.argsort(sizes[which], kind="stable")]
    i = 0
    while i < len(order):
        j = i + 1
        while j < len(order) and (j - i + 1) * int(sizes[order[j]]) ** 2 <= _KENDALL_CHUNK_ELEMS:
            j += 1
        chunk = order[i:j]
        m = int(sizes[chunk].max())
        csz = sizes[chunk]
        rowpos = np.repeat(np.arange(len(chunk)), csz)
        colpos = np.arange(int(csz.sum())) - np.repeat(np.cumsum(csz) - csz, csz)
        src = np.repeat(starts[chunk], csz) + colpos
        X = np.full((len(chunk), m), np.nan)
        Y = np.full((len(chunk), m), np.nan)
        X[rowpos, colpos] = x[src]
        Y[rowpos, colpos] = y[src]
        sx = np.nan_to_num(np.sign(X[:, :, None] - X[:, None, :]))
        sy = np.nan_to_num(np.sign(Y[:, :, None] - Y[:, None, :]))
        num = (sx * sy).sum(axis=(1, 2))
        den = np.sqrt(np.abs(sx).sum(axis=(1, 2)) * np.abs(sy).sum(axis=(1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            tau[np.searchsorted(which, chunk)] = num / den
        i = j
    return tau


def _grouped_corr(x: np.ndarray, y: np.ndarray, sub: np.ndarray, image: np.ndarray,
                  owner: np.ndarray, nowner: int) -> dict[str, np.ndarray]:
    """SROCC, PLCC, KROCC of x vs y within each subgroup ``sub``, averaged per ``owner`` group.

    A subgroup counts when it has ≥3 distinct images and neither x nor y is constant on its
    valid (finite) rows; its weight is the number of those rows.
    """
    res = {k: np.full(nowner, np.nan) for k in ("srocc", "plcc", "krocc")}
    valid = np.isfinite(x) & np.isfinite(y)
    if not valid.any():
        return res
    x, y, sub, image, owner = x[valid], y[valid], sub[valid], image[valid], owner[valid]
    order = np.lexsort((image, sub))
    x, y, sub, image, owner = x[order], y[order], sub[order], image[order], owner[order]
    uniq, starts, sizes = np.unique(sub, return_index=True, return_counts=True)
    g = np.repeat(np.arange(len(uniq)), sizes)
    ng = len(uniq)
    new_img = np.ones(len(image), dtype=bool)
    new_img[1:] = (image[1:] != image[:-1]) | (g[1:] != g[:-1])
    n_distinct = np.bincount(g, weights=new_img, minlength=ng)
    xmin, xmax = np.minimum.reduceat(x, starts), np.maximum.reduceat(x, starts)
    ymin, ymax = np.minimum.reduceat(y, starts), np.maximum.reduceat(y, starts)
    use = (n_distinct >= 3) & (xmax > xmin) & (ymax > ymin)

    def pearson(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        uc = u - (np.bincount(g, u, ng) / sizes)[g]
        vc = v - (np.bincount(g, v, ng) / sizes)[g]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.bincount(g, uc * vc, ng) / np.sqrt(np.bincount(g, uc * uc, ng) * np.bincount(g, vc * vc, ng))
        return np.clip(r, -1.0, 1.0)

    rx = pd.Series(x).groupby(g).rank(method="average").to_numpy()
    ry = pd.Series(y).groupby(g).rank(method="average").to_numpy()
    per = {"plcc": pearson(x, y), "srocc": pearson(rx, ry), "krocc": np.full(ng, np.nan)}
    idx = np.flatnonzero(use)
    small = idx[sizes[idx] <= _KENDALL_PAIRWISE_MAX]
    if len(small):
        per["krocc"][small] = _kendall_small(x, y, starts, sizes, small)
    for gi in idx[sizes[idx] > _KENDALL_PAIRWISE_MAX]:
        sl = slice(starts[gi], starts[gi] + sizes[gi])
        per["krocc"][gi] = stats.kendalltau(x[sl], y[sl]).statistic
    own = owner[starts]
    w = np.where(use, sizes, 0).astype(np.float64)
    for k, r in per.items():
        ok = use & np.isfinite(r)
        wk = np.where(ok, w, 0.0)
        num = np.bincount(own, np.where(ok, r, 0.0) * wk, nowner)
        den = np.bincount(own, wk, nowner)
        with np.errstate(invalid="ignore", divide="ignore"):
            res[k] = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return res


def _codes(rows: pd.DataFrame, cols: list[str], sort: bool = False) -> np.ndarray:
    if not cols:
        return np.zeros(len(rows), dtype=np.int64)
    return rows.groupby(cols, sort=sort, dropna=False).ngroup().to_numpy(dtype=np.int64)


def _correlations(rows: pd.DataFrame, by: list[str], gid: np.ndarray, ngroups: int) -> pd.DataFrame:
    """All correlation columns, one row per ``by`` group (see module docs for the conventions)."""
    cell_extra = [c for c in CELL_COLUMNS + ["dataset"] if c in rows.columns and c not in by]
    truth_keys = cell_extra + (["group"] if "group" in rows.columns else [])
    sub_truth = gid * (1 << 31) + _codes(rows, truth_keys)
    sub_cells = gid * (1 << 31) + _codes(rows, cell_extra)
    ikey = _image_key(rows)
    image = _codes(rows, ikey)
    truth = _col(rows, "truth")
    s = _sign(rows)
    out: dict[str, np.ndarray] = {}
    for name in _CORR_TARGETS:
        r = _grouped_corr(s * _col(rows, name), truth, sub_truth, image, gid, ngroups)
        for k, v in r.items():
            out[f"{k}_{name}"] = v
    r = _grouped_corr(_col(rows, "clear"), _col(rows, "defended_clear"), sub_cells, image, gid, ngroups)
    out["srocc_clear_vs_defended_clear"] = r["srocc"]
    return pd.DataFrame(out)[CORR_COLUMNS]


# ----------------------------------------------------------------------------- public API
def summarize(rows: pd.DataFrame, by: Iterable[str] = ("metric", "attack", "defense"),
              seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """One row per ``by`` group: every score of the study, the extensions, and bootstrap CIs.

    Columns: the ``by`` keys, ``n`` (distinct images), the abs/rel gains (robust, nonpurified,
    both_defended, and their ``_adaptive`` versions), ``attack_gain``, ``defended_gain``
    (+``_adaptive``; ``defended_gain_paired`` = the transfer gain on the images that have an adaptive
    result), ``similarity_score``, ``clear_similarity_score``, SROCC/PLCC/KROCC of
    ground truth vs c/a/dc/da (sign-corrected), ``srocc_clear_vs_defended_clear``,
    ``mean_time``, and ``<score>_lo``/``<score>_hi`` for ``BOOT_SCORES``.
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = _check(rows, by)
    per_row = _per_row(rows)
    ci_cols = BOOT_SCORES
    grouped = rows.groupby(by, sort=True, dropna=False)
    keys_index = grouped.size().index
    cols = [
        "robust_abs_gain", "robust_rel_gain", "nonpurified_abs_gain", "nonpurified_rel_gain",
        "both_defended_abs_gain", "both_defended_rel_gain",
        "robust_abs_gain_adaptive", "robust_rel_gain_adaptive",
        "both_defended_abs_gain_adaptive", "both_defended_rel_gain_adaptive",
        "attack_gain", "defended_gain", "defended_gain_adaptive", "defended_gain_paired",
        "similarity_score", "clear_similarity_score"]
    if len(rows) == 0:
        extra = ["n"] + cols + CORR_COLUMNS + ["mean_time"] \
            + [f"{c}_{e}" for c in ci_cols for e in ("lo", "hi")]
        return pd.DataFrame(columns=by + extra)
    gid = grouped.ngroup().to_numpy(dtype=np.int64)
    ngroups = len(keys_index)
    keys = pd.DataFrame(keys_index.to_frame(index=False))
    n_img = rows.assign(_g=gid).drop_duplicates(["_g"] + _image_key(rows)).groupby("_g").size()
    means = _nan_mean_by(per_row, gid, ngroups)
    corr = _correlations(rows, by, gid, ngroups)
    ci = _boot_by_group(per_row[ci_cols], rows, gid, ngroups, n_boot, seed)
    out = pd.concat([keys, pd.DataFrame({"n": n_img.reindex(range(ngroups)).to_numpy()}),
                     means[cols], corr, means[["mean_time"]], ci], axis=1)
    return out


def worst_case(rows: pd.DataFrame, seed: int = 0, n_boot: int = 1000,
               by: Iterable[str] = ("metric", "defense")) -> pd.DataFrame:
    """Per-image worst case over all attacks run against each defense (AutoAttack semantics).

    For each (metric, defense) and image, the deviation is the max over that image's attack rows
    of max(|c − da|, |c − da_adapt|)/R (adaptive ignored where NaN); ``robust_abs_gain_worst``
    is its mean over images, with a bootstrap CI. ``robust_abs_gain_worst_nonadaptive`` uses
    |c − da| only, ``defended_gain_worst`` the max of s·(da − dc)/R and s·(da_adapt − dc)/R.
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = _check(rows, by + (["attack"] if "attack" not in by else []))
    c, dc, da = _col(rows, "clear"), _col(rows, "defended_clear"), _col(rows, "defended_attacked")
    dad = _col(rows, "defended_attacked_adaptive")
    r = _col(rows, "range_hi") - _col(rows, "range_lo")
    s = _sign(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dev_na = np.abs(c - da) / r
        dev = np.fmax(dev_na, np.abs(c - dad) / r)
        sgn = np.fmax(s * (da - dc) / r, s * (dad - dc) / r)
    ikey = _image_key(rows)
    cols = ["robust_abs_gain_worst", "robust_abs_gain_worst_nonadaptive", "defended_gain_worst"]
    per = pd.DataFrame({c_: v for c_, v in zip(cols, (dev, dev_na, sgn))}, index=rows.index)
    frame = pd.concat([rows[by + ikey + ["attack"]].reset_index(drop=True),
                       per.reset_index(drop=True)], axis=1)
    if len(frame) == 0:
        return pd.DataFrame(columns=by + ["n", "attacks"] + cols
                            + [f"{c_}_{e}" for c_ in cols[:1] for e in ("lo", "hi")])
    img = frame.groupby(by + ikey, sort=True, dropna=False)
    per_img = img[cols].max()             # pandas max skips NaN; all-NaN stays NaN
    per_img = per_img.reset_index()
    grouped = per_img.groupby(by, sort=True, dropna=False)
    gid = grouped.ngroup().to_numpy(dtype=np.int64)
    keys_index = grouped.size().index
    ngroups = len(keys_index)
    means = _nan_mean_by(per_img[cols], gid, ngroups)
    ci = _boot_by_group(per_img[cols[:1]], per_img, gid, ngroups, n_boot, seed)
    attacks = frame.groupby(by, sort=True, dropna=False)["attack"].nunique().to_numpy()
    n = grouped.size().to_numpy()
    return pd.concat([keys_index.to_frame(index=False),
                      pd.DataFrame({"n": n, "attacks": attacks}), means, ci], axis=1)


def _pareto(f: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Non-dominated points (both axes higher = better); points with a NaN axis are never on it."""
    ok = np.isfinite(f) & np.isfinite(q)
    ge = (f[None, :] >= f[:, None]) & (q[None, :] >= q[:, None])     # [i, j]: j at least as good
    gt = (f[None, :] > f[:, None]) | (q[None, :] > q[:, None])
    dominated = (ge & gt & ok[None, :]).any(axis=1)
    return ok & ~dominated


def two_axis(summary: pd.DataFrame, gain: str = "robust_abs_gain") -> pd.DataFrame:
    """Defense summary per (metric, defense) on two axes, the Pareto front and a combined rank.

    fidelity = clip(1 − mean over attacks of ``gain``, 0, 1); quality = mean over attacks of
    clear_similarity_score (SSIM + PSNR/40 of clean vs defended clean). Both higher = better.
    ``pareto`` marks defenses no other defense of the same metric beats on both axes;
    ``rank`` orders them by ``rank_score`` = mean of the two per-axis ranks (1 = best).
    """
    if not isinstance(summary, pd.DataFrame):
        raise InputError(f"summary: expected a pandas DataFrame, got {type(summary).__name__}")
    need = ["metric", "defense", gain, "clear_similarity_score"]
    missing = [c for c in need if c not in summary.columns]
    if missing:
        raise InputError(f"summary: missing column(s) {missing} (pass the output of summarize)")
    cols = ["metric", "defense", "fidelity", "quality", "attacks", "pareto",
            "fidelity_rank", "quality_rank", "rank_score", "rank"]
    if len(summary) == 0:
        return pd.DataFrame(columns=cols)
    g = summary.groupby(["metric", "defense"], sort=True, dropna=False)
    agg = g[[gain, "clear_similarity_score"]].mean()     # mean skips NaN
    out = agg.reset_index()
    out["fidelity"] = np.clip(1.0 - out[gain].to_numpy(dtype=np.float64), 0.0, 1.0)
    out["quality"] = out["clear_similarity_score"].to_numpy(dtype=np.float64)
    out["attacks"] = (g["attack"].nunique().to_numpy() if "attack" in summary.columns
                      else np.ones(len(out), dtype=np.int64))
    out["pareto"] = False
    for _, idx in out.groupby("metric", sort=False, dropna=False).groups.items():
        sub = out.loc[idx]
        out.loc[idx, "pareto"] = _pareto(sub["fidelity"].to_numpy(), sub["quality"].to_numpy())
    per_metric = out.groupby("metric", sort=False, dropna=False)
    out["fidelity_rank"] = per_metric["fidelity"].rank(ascending=False, method="average")
    out["quality_rank"] = per_metric["quality"].rank(ascending=False, method="average")
    out["rank_score"] = (out["fidelity_rank"] + out["quality_rank"]) / 2.0
    out["rank"] = out.groupby("metric", sort=False, dropna=False)["rank_score"].rank(method="min")
    out["pareto"] = out["pareto"].astype(bool)
    return out[cols].reset_index(drop=True)
