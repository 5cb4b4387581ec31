"""Aggregate scores: from per-image rows (``rows.py``) to one row per cell, worst case, two axes.

Every output column, its formula, direction and the defense families it applies to is listed once
in ``score_table.py``; this module computes them and takes its column lists and order from there.
Formulas follow the reference study (msu-video-group/adversarial-defenses-for-iqa) for the study
columns, plus the extensions of ``docs/methods/scores.md``, chiefly the honest robustness axis:

    bias      = |c − dc| / R                      the defense's own shift of the clean score
    movement  = s·(da − dc) / R, s·(dad − dc) / R how far the transfer / adaptive attack moves the
                                                   defended score toward its goal (s = −1: lower-better)
    error     = bias + max(worst movement, 0)     per image, worst over attacks and transfer/adaptive
    fidelity  = 1 − clip(mean error, 0, 1)

A defense that shifts every score by a constant k pays |k|/R in bias and cannot cancel the attack's
movement, whereas the study's |c − da| can be lowered by such a shift.

Everything is vectorised over rows: means are group sums, correlations are group moments (ranks
for SROCC, pairwise signs for KROCC), per-image worst cases are pandas group maxima, and bootstrap
resamples are a count matrix times per-image sums, so no Python loop runs per resample or per row.
"""
from __future__ import annotations

import warnings
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from iqaguard.errors import InputError
from iqaguard.evaluation import score_table
from iqaguard.evaluation.quality import LOSSLESS_SIMILARITY, PSNR_CAP_DB, similarity
from iqaguard.evaluation.rows import CELL_COLUMNS
from iqaguard.seeds import derive_seed

__all__ = ["summarize", "worst_case", "two_axis", "PSNR_CAP_DB", "REL_EPS", "BOOT_SCORES", "WORST_BOOT_SCORES",
           "CORR_COLUMNS", "UNTOUCHED_FAMILIES", "RANK_FORMULA"]

REL_EPS = 1e-6
"""The study's epsilon in relative gains, |c − x| / (|c| + REL_EPS)."""
CI_LEVEL = 0.95
BOOT_SCORES = score_table.ci_columns("summary")
"""Summary scores that get ``<score>_lo`` / ``<score>_hi`` percentile-bootstrap columns."""
WORST_BOOT_SCORES = score_table.ci_columns("worst")
_CORR_TARGETS = ("clear", "attacked", "defended_clear", "defended_attacked")
CORR_COLUMNS = [n for n in score_table.columns("summary") if n.startswith(("srocc_", "plcc_", "krocc_"))]
"""The correlation columns of the score table (``_correlations`` fills exactly these)."""
UNTOUCHED_FAMILIES = ("training", "certified")
"""Families whose defense leaves the image untouched: their quality cost is nil (quality 3.5)."""
DEFAULT_FAMILY = "purification"
"""Family assumed for rows without a ``family`` value (stores written before families existed)."""
RANK_FORMULA = (
    "fidelity = 1 − clip(score_error, 0, 1), score_error = mean over images of the worst, over every attack "
    "and over transfer/adaptive, of |c − dc|/R + max(s·(d − dc)/R, 0) with d the defended attacked score; "
    "quality = RGB SSIM + min(PSNR, 100)/40 of clean vs defended-clean (3.5 = lossless for training and "
    "certified defenses, which leave the image untouched); rank = order of the mean of the fidelity and "
    "quality ranks within the metric (1 = best)")
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
def _family(rows: pd.DataFrame) -> pd.Series:
    if "family" not in rows.columns:
        return pd.Series(DEFAULT_FAMILY, index=rows.index, dtype=object)
    return rows["family"].astype(object).where(rows["family"].notna(), DEFAULT_FAMILY)


def _clip0(v: np.ndarray) -> np.ndarray:
    """max(v, 0) with NaN kept (np.maximum propagates NaN; np.fmax would turn it into 0)."""
    return np.maximum(v, 0.0)


def _robustness(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-row bias and movements (see the module docstring); NaN where an input is missing."""
    c, dc = _col(rows, "clear"), _col(rows, "defended_clear")
    da, dad = _col(rows, "defended_attacked"), _col(rows, "defended_attacked_adaptive")
    r = _col(rows, "range_hi") - _col(rows, "range_lo")
    s = _sign(rows)
    with np.errstate(invalid="ignore"):
        bias = np.abs(c - dc) / r
        mt, ma = s * (da - dc) / r, s * (dad - dc) / r
        mw = np.fmax(mt, ma)                      # NaN adaptive ignored, not read as 0
    return {"bias": bias, "movement_transfer": mt, "movement_adaptive": ma, "movement_worst": mw,
            "score_error_cell": bias + _clip0(mw), "score_error_transfer": bias + _clip0(mt)}


def _cert_violation(rows: pd.DataFrame) -> np.ndarray:
    """Per row: share of its checked values (da, dad) that leave [cert_lo, cert_hi] although the
    perturbation's ℓ2 norm is within cert_eps; NaN when nothing is checked."""
    lo, hi, eps = _col(rows, "cert_lo"), _col(rows, "cert_hi"), _col(rows, "cert_eps")
    ok = _col(rows, "cert_abstained") != 1
    bad = np.zeros(len(rows))
    n = np.zeros(len(rows))
    for val, l2 in (("defended_attacked", "l2_c_a"), ("defended_attacked_adaptive", "l2_c_ad")):
        v = _col(rows, val)
        with np.errstate(invalid="ignore"):
            check = ok & np.isfinite(v) & np.isfinite(lo) & np.isfinite(hi) & (_col(rows, l2) <= eps)
            bad += check & ((v < lo) | (v > hi))
        n += check
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, bad / np.where(n > 0, n, 1.0), np.nan)


def _per_row(rows: pd.DataFrame) -> pd.DataFrame:
    """Every per-image quantity whose group mean is a ``summarize`` column (names: score_table)."""
    c, a = _col(rows, "clear"), _col(rows, "attacked")
    dc, da = _col(rows, "defended_clear"), _col(rows, "defended_attacked")
    dad = _col(rows, "defended_attacked_adaptive")
    r = _col(rows, "range_hi") - _col(rows, "range_lo")
    s = _sign(rows)
    rel = np.abs(c) + REL_EPS
    reld = np.abs(dc) + REL_EPS
    rob = _robustness(rows)
    q = {n: _col(rows, n) for n in rows.columns if n.startswith("q_")}
    qn = lambda name: q.get(name, np.full(len(rows), np.nan))    # noqa: E731
    with np.errstate(invalid="ignore"):
        out = {
            "bias": rob["bias"], "movement_transfer": rob["movement_transfer"],
            "movement_adaptive": rob["movement_adaptive"], "movement_worst": rob["movement_worst"],
            "score_error_cell": rob["score_error_cell"],
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
            "defended_gain": rob["movement_transfer"],
            "defended_gain_adaptive": rob["movement_adaptive"],
            # the transfer movement on exactly the images that have an adaptive result (paired comparison)
            "defended_gain_paired": np.where(np.isfinite(dad), rob["movement_transfer"], np.nan),
            "similarity_score": similarity(qn("q_ssim_rgb_c_da"), qn("q_psnr_rgb_c_da")),
            "clear_similarity_score": similarity(qn("q_ssim_rgb_c_dc"), qn("q_psnr_rgb_c_dc")),
            "similarity_score_luma": similarity(qn("q_ssim_c_da"), qn("q_psnr_c_da")),
            "clear_similarity_score_luma": similarity(qn("q_ssim_c_dc"), qn("q_psnr_c_dc")),
            "ms_ssim_luma": qn("q_ms_ssim_c_da"),
            "clear_ms_ssim_luma": qn("q_ms_ssim_c_dc"),
            "cert_width": np.where(_col(rows, "cert_abstained") != 1,
                                   (_col(rows, "cert_hi") - _col(rows, "cert_lo")) / r, np.nan),
            "cert_abstain_rate": _col(rows, "cert_abstained"),
            "cert_violation": _cert_violation(rows),
            "mean_time": _col(rows, "defense_seconds"),
            "mean_forwards": _col(rows, "defense_forwards"),
            "fit_seconds": _col(rows, "fit_seconds"),
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
def _with_ci(names: list[str], means: pd.DataFrame, ci: pd.DataFrame, ci_names: list[str]) -> pd.DataFrame:
    """Columns in table order, each CI'd score followed by its ``_lo``/``_hi``."""
    parts = {}
    for n in names:
        parts[n] = means[n]
        if n in ci_names:
            parts[f"{n}_lo"], parts[f"{n}_hi"] = ci[f"{n}_lo"], ci[f"{n}_hi"]
    return pd.DataFrame(parts)


def _empty(by: list[str], frame: str) -> pd.DataFrame:
    cols = []
    for n in score_table.columns(frame):
        cols += [n] + ([f"{n}_lo", f"{n}_hi"] if n in score_table.ci_columns(frame) else [])
    return pd.DataFrame(columns=by + ([] if "family" in by else ["family"]) + cols)


def _group_family(rows: pd.DataFrame, gid: np.ndarray, ngroups: int) -> np.ndarray:
    """The family of each group's first row (a defense has one family)."""
    first = _family(rows).reset_index(drop=True).groupby(gid).first()
    return first.reindex(range(ngroups), fill_value=DEFAULT_FAMILY).to_numpy(dtype=object)


def summarize(rows: pd.DataFrame, by: Iterable[str] = ("metric", "attack", "defense"),
              seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """One row per ``by`` group: the keys, ``family``, then every ``summary`` column of the score
    table in its order (a CI'd score is followed by its ``_lo``/``_hi``).

    Each score is the mean over the group's rows of a per-image value (NaN and non-finite values
    dropped), e.g. ``score_error_cell`` = mean of |c − dc|/R + max(s·(da − dc), s·(dad − dc), 0)/R
    and ``similarity_score`` = mean of RGB SSIM(c, da) + min(RGB PSNR(c, da), 100)/40; correlations
    are per truth group (see docs/methods/scores.md). ``n`` = distinct images.
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = _check(rows, by)
    if len(rows) == 0:
        return _empty(by, "summary")
    per_row = _per_row(rows)
    grouped = rows.groupby(by, sort=True, dropna=False)
    keys = pd.DataFrame(grouped.size().index.to_frame(index=False))
    gid = grouped.ngroup().to_numpy(dtype=np.int64)
    ngroups = len(keys)
    n_img = rows.assign(_g=gid).drop_duplicates(["_g"] + _image_key(rows)).groupby("_g").size()
    means = pd.concat([_nan_mean_by(per_row, gid, ngroups), _correlations(rows, by, gid, ngroups),
                       pd.DataFrame({"n": n_img.reindex(range(ngroups)).to_numpy()})], axis=1)
    ci = _boot_by_group(per_row[BOOT_SCORES], rows, gid, ngroups, n_boot, seed)
    if "family" not in by:
        keys["family"] = _group_family(rows, gid, ngroups)
    return pd.concat([keys, _with_ci(score_table.columns("summary"), means, ci, BOOT_SCORES)], axis=1)


_PER_IMAGE_MEAN = ("bias", "clear_similarity_score")


def worst_case(rows: pd.DataFrame, seed: int = 0, n_boot: int = 1000,
               by: Iterable[str] = ("metric", "defense")) -> pd.DataFrame:
    """Per-image worst case over every attack run against each defense, transfer and adaptive.

    Per row: bias = |c − dc|/R, movement m = max(s·(da − dc), s·(dad − dc))/R (dad ignored where
    NaN), error = bias + max(m, 0). Per image (over the image's attack rows): ``score_error`` = max of
    error, ``movement_worst`` = max of max(m, 0), ``bias`` = mean; then each is averaged over
    images, with a paired bootstrap CI. ``fidelity`` = 1 − clip(score_error, 0, 1) (its ``_lo``/``_hi``
    from score_error's CI). ``score_error_transfer`` / ``movement_*_worst`` use one attack kind only;
    ``robust_abs_gain_worst`` (+``_nonadaptive``) is the study-style max |c − da|/R; ``n_adaptive``
    counts images with an adaptive value; ``clear_similarity_score`` feeds ``two_axis``'s quality.
    """
    by = [by] if isinstance(by, str) else list(by)
    rows = _check(rows, by + (["attack"] if "attack" not in by else []))
    if len(rows) == 0:
        return _empty(by, "worst")
    c, da = _col(rows, "clear"), _col(rows, "defended_attacked")
    dad = _col(rows, "defended_attacked_adaptive")
    r = _col(rows, "range_hi") - _col(rows, "range_lo")
    rob = _robustness(rows)
    with np.errstate(invalid="ignore"):
        per = pd.DataFrame({
            "bias": rob["bias"],
            "movement_worst": _clip0(rob["movement_worst"]),
            "movement_transfer_worst": _clip0(rob["movement_transfer"]),
            "movement_adaptive_worst": _clip0(rob["movement_adaptive"]),
            "score_error": rob["score_error_cell"],
            "score_error_transfer": rob["score_error_transfer"],
            "robust_abs_gain_worst": np.fmax(np.abs(c - da), np.abs(c - dad)) / r,
            "robust_abs_gain_worst_nonadaptive": np.abs(c - da) / r,
            "clear_similarity_score": similarity(_col(rows, "q_ssim_rgb_c_dc"), _col(rows, "q_psnr_rgb_c_dc")),
            "n_adaptive": np.isfinite(dad).astype(np.float64),
        })
    per = per.where(np.isfinite(per.to_numpy()))          # ±inf counts as missing, like NaN
    ikey = _image_key(rows)
    frame = pd.concat([rows[by + ikey].reset_index(drop=True), per], axis=1)
    agg = {n: ("mean" if n in _PER_IMAGE_MEAN else "max") for n in per.columns}
    per_img = frame.groupby(by + ikey, sort=True, dropna=False).agg(agg).reset_index()   # max/mean skip NaN
    grouped = per_img.groupby(by, sort=True, dropna=False)
    gid = grouped.ngroup().to_numpy(dtype=np.int64)
    keys = grouped.size().index.to_frame(index=False)
    ngroups = len(keys)
    value_cols = [n for n in per.columns if n != "n_adaptive"]
    means = _nan_mean_by(per_img[value_cols], gid, ngroups)
    boot = [n for n in WORST_BOOT_SCORES if n != "fidelity"]
    ci = _boot_by_group(per_img[boot], per_img, gid, ngroups, n_boot, seed)
    means["n"] = grouped.size().to_numpy()
    means["n_adaptive"] = np.bincount(gid, per_img["n_adaptive"].fillna(0).to_numpy(), ngroups).astype(np.int64)
    rgid = rows.groupby(by, sort=True, dropna=False).ngroup().to_numpy(dtype=np.int64)
    means["attacks"] = rows.groupby(by, sort=True, dropna=False)["attack"].nunique().to_numpy()
    err = means["score_error"].to_numpy()
    means["fidelity"] = 1.0 - np.clip(err, 0.0, 1.0)
    ci["fidelity_lo"] = 1.0 - np.clip(ci["score_error_hi"].to_numpy(), 0.0, 1.0)
    ci["fidelity_hi"] = 1.0 - np.clip(ci["score_error_lo"].to_numpy(), 0.0, 1.0)
    cell_extra = [k for k in CELL_COLUMNS + ["dataset"] if k in rows.columns and k not in by]
    corr = _grouped_corr(_col(rows, "clear"), _col(rows, "defended_clear"),
                         rgid * (1 << 31) + _codes(rows, cell_extra), _codes(rows, ikey), rgid, ngroups)
    means["srocc_clear_vs_defended_clear"] = corr["srocc"]
    if "family" not in by:
        keys["family"] = _group_family(rows, rgid, ngroups)
    return pd.concat([keys, _with_ci(score_table.columns("worst"), means, ci, WORST_BOOT_SCORES)], axis=1)


def _pareto(f: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Non-dominated points (both axes higher = better); points with a NaN axis are never on it."""
    ok = np.isfinite(f) & np.isfinite(q)
    ge = (f[None, :] >= f[:, None]) & (q[None, :] >= q[:, None])     # [i, j]: j at least as good
    gt = (f[None, :] > f[:, None]) | (q[None, :] > q[:, None])
    dominated = (ge & gt & ok[None, :]).any(axis=1)
    return ok & ~dominated


def two_axis(worst: pd.DataFrame) -> pd.DataFrame:
    """Defense summary per (metric, defense) on two axes, the Pareto front and a combined rank.

    Takes the output of ``worst_case(rows)`` (not the per-attack summary), so both axes rest on the
    per-image worst case over every attack with adaptive results included:

    * fidelity = 1 − clip(score_error, 0, 1), score_error = mean over images of the worst, over
      attacks and transfer/adaptive, of |c − dc|/R + max(s·(d − dc)/R, 0);
    * quality = clear_similarity_score = RGB SSIM(c, dc) + min(RGB PSNR(c, dc), 100)/40 for
      purifiers; training and certified defenses leave the image untouched, so their quality is the
      lossless 1 + 100/40 = 3.5 (``quality_note`` says which); quality_cost = 3.5 − quality.

    ``pareto`` marks defenses no other defense of the same metric beats on both axes; ``rank`` orders
    them by ``rank_score`` = mean of the two per-axis ranks (1 = best). ``attrs["rank_formula"]``
    states the formulas for the report.
    """
    if not isinstance(worst, pd.DataFrame):
        raise InputError(f"worst: expected a pandas DataFrame, got {type(worst).__name__}")
    need = ["metric", "defense", "score_error", "clear_similarity_score"]
    missing = [c for c in need if c not in worst.columns]
    if missing:
        raise InputError(f"worst: missing column(s) {missing} (pass the output of worst_case)")
    if worst.duplicated(["metric", "defense"]).any():
        raise InputError("worst: one row per (metric, defense) expected (worst_case with its default by)")
    cols = score_table.columns("two_axis")
    out_cols = ["metric", "defense", "family"] + [
        x for n in cols for x in ([n, f"{n}_lo", f"{n}_hi"] if n in score_table.ci_columns("two_axis") else [n])]
    if len(worst) == 0:
        out = pd.DataFrame(columns=out_cols)
        out.attrs["rank_formula"] = RANK_FORMULA
        return out
    out = worst.sort_values(["metric", "defense"]).reset_index(drop=True)
    fam = _family(out)
    untouched = fam.isin(UNTOUCHED_FAMILIES).to_numpy()
    err = pd.to_numeric(out["score_error"], errors="coerce").to_numpy(dtype=np.float64)
    out["family"] = fam
    out["fidelity"] = 1.0 - np.clip(err, 0.0, 1.0)
    for e, other in (("lo", "hi"), ("hi", "lo")):
        src = f"score_error_{other}"
        out[f"fidelity_{e}"] = (1.0 - np.clip(out[src].to_numpy(dtype=np.float64), 0.0, 1.0)
                                if src in out.columns else np.nan)
    measured = pd.to_numeric(out["clear_similarity_score"], errors="coerce").to_numpy(dtype=np.float64)
    out["quality"] = np.where(untouched, LOSSLESS_SIMILARITY, measured)
    out["quality_cost"] = LOSSLESS_SIMILARITY - out["quality"]
    out["quality_note"] = np.where(untouched, "image untouched (lossless)",
                                   np.where(np.isfinite(measured), "measured", "not measured"))
    for n in out_cols:
        if n not in out.columns:
            out[n] = np.nan                       # e.g. no CI or no attack count in a hand-made frame
    out["pareto"] = False
    for _, idx in out.groupby("metric", sort=False, dropna=False).groups.items():   # one pass per metric
        sub = out.loc[idx]
        out.loc[idx, "pareto"] = _pareto(sub["fidelity"].to_numpy(), sub["quality"].to_numpy())
    per_metric = out.groupby("metric", sort=False, dropna=False)
    out["fidelity_rank"] = per_metric["fidelity"].rank(ascending=False, method="average")
    out["quality_rank"] = per_metric["quality"].rank(ascending=False, method="average")
    out["rank_score"] = (out["fidelity_rank"] + out["quality_rank"]) / 2.0
    out["rank"] = out.groupby("metric", sort=False, dropna=False)["rank_score"].rank(method="min")
    out["pareto"] = out["pareto"].astype(bool)
    out = out[out_cols].reset_index(drop=True)
    out.attrs["rank_formula"] = RANK_FORMULA
    return out
