"""Aggregate scores: hand-computed formulas, correlations vs scipy, bootstrap, worst case, Pareto,
and the honest robustness axis (a score-shifting defense, transfer vs adaptive ranking, NaN adaptive).

Expected values in the formula tests are worked out by hand in the comments (exact up to float
rounding and the 1e-6 epsilon of relative gains); correlations are checked against
scipy.stats.{spearmanr,pearsonr,kendalltau} computed group by group in a plain loop.
"""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iqaguard.errors import InputError
from iqaguard.evaluation import score_table
from iqaguard.evaluation.scores import BOOT_SCORES, summarize, two_axis, worst_case

NAN = float("nan")


def make_rows(n, **cols):
    """Rows for one cell (metric m, attack A, defense D) with neutral defaults."""
    base = {
        "metric": "m", "attack": "A", "defense": "D", "dataset": "ds",
        "image": [f"img{i}" for i in range(n)],
        "clear": 0.0, "attacked": 0.0, "defended_clear": 0.0, "defended_attacked": 0.0,
        "defended_attacked_adaptive": NAN, "truth": NAN, "truth_kind": "mos", "group": "g",
        "q_psnr_rgb_c_da": NAN, "q_ssim_rgb_c_da": NAN, "q_psnr_rgb_c_dc": NAN, "q_ssim_rgb_c_dc": NAN,
        "q_psnr_c_da": NAN, "q_ssim_c_da": NAN, "q_psnr_c_dc": NAN, "q_ssim_c_dc": NAN,
        "lower_better": False, "range_lo": 0.0, "range_hi": 10.0, "defense_seconds": 0.0,
    }
    base.update(cols)
    return pd.DataFrame({k: (v if isinstance(v, (list, np.ndarray)) else [v] * n) for k, v in base.items()})


def hand_rows(lower_better=False):
    # R = 10.   img0: c=5  a=8 dc=4   da=6 da_adapt=9    img1: c=2 a=3 dc=2.5 da=1 da_adapt=NaN
    return make_rows(
        2, clear=[5.0, 2.0], attacked=[8.0, 3.0], defended_clear=[4.0, 2.5],
        defended_attacked=[6.0, 1.0], defended_attacked_adaptive=[9.0, NAN],
        q_ssim_rgb_c_da=[0.9, 0.8], q_psnr_rgb_c_da=[30.0, np.inf],
        q_ssim_rgb_c_dc=[NAN, 1.0], q_psnr_rgb_c_dc=[35.0, 40.0],
        q_ssim_c_da=[0.95, 0.85], q_psnr_c_da=[32.0, 40.0], q_ms_ssim_c_dc=[0.97, 0.99],
        defense_seconds=[0.5, 1.5], lower_better=lower_better)


def one(df):
    assert len(df) == 1
    return df.iloc[0]


def test_gains_by_hand():
    s = one(summarize(hand_rows(), n_boot=50))
    assert s["n"] == 2
    assert s["robust_abs_gain"] == pytest.approx((1 + 1) / 2 / 10)                 # |5-6|, |2-1|
    assert s["robust_rel_gain"] == pytest.approx((1 / 5 + 1 / 2) / 2, rel=1e-6)
    assert s["nonpurified_abs_gain"] == pytest.approx((3 + 1) / 2 / 10)            # |5-8|, |2-3|
    assert s["nonpurified_rel_gain"] == pytest.approx((3 / 5 + 1 / 2) / 2, rel=1e-6)
    assert s["both_defended_abs_gain"] == pytest.approx((2 + 1.5) / 2 / 10)        # |4-6|, |2.5-1|
    assert s["both_defended_rel_gain"] == pytest.approx((2 / 4 + 1.5 / 2.5) / 2, rel=1e-6)
    # adaptive: only img0 has a value
    assert s["robust_abs_gain_adaptive"] == pytest.approx(4 / 10)                  # |5-9|
    assert s["robust_rel_gain_adaptive"] == pytest.approx(4 / 5, rel=1e-6)
    assert s["both_defended_abs_gain_adaptive"] == pytest.approx(5 / 10)           # |4-9|
    assert s["both_defended_rel_gain_adaptive"] == pytest.approx(5 / 4, rel=1e-6)
    assert s["defended_gain_adaptive"] == pytest.approx(5 / 10)
    # signed, higher-better: s = +1
    assert s["attack_gain"] == pytest.approx((3 + 1) / 2 / 10)                     # 8-5, 3-2
    assert s["defended_gain"] == pytest.approx((2 - 1.5) / 2 / 10)                 # 6-4, 1-2.5
    # RGB SSIM + min(RGB PSNR, 100)/40: (0.9 + 30/40 + 0.8 + 100/40) / 2; clear: img0 NaN dropped
    assert s["similarity_score"] == pytest.approx((0.9 + 0.75 + 0.8 + 2.5) / 2)
    assert s["clear_similarity_score"] == pytest.approx(1.0 + 1.0)
    # the luma variants are separate columns: (0.95 + 32/40 + 0.85 + 40/40) / 2; MS-SSIM plain mean
    assert s["similarity_score_luma"] == pytest.approx((0.95 + 0.8 + 0.85 + 1.0) / 2)
    assert s["clear_ms_ssim_luma"] == pytest.approx(0.98)
    assert np.isnan(s["clear_similarity_score_luma"])
    # honest robustness. bias |c - dc|: 1, 0.5; transfer movement da - dc: 2, -1.5; adaptive dad - dc: 5, NaN
    assert s["bias"] == pytest.approx((0.1 + 0.05) / 2)
    assert s["movement_transfer"] == pytest.approx((0.2 - 0.15) / 2)
    assert s["movement_adaptive"] == pytest.approx(0.5)                            # img1's NaN is not a 0
    assert s["movement_worst"] == pytest.approx((0.5 - 0.15) / 2)                  # max(.2,.5), max(-.15, NaN)
    assert s["score_error_cell"] == pytest.approx((0.1 + 0.5 + 0.05 + 0) / 2)     # bias + max(worst, 0)
    assert s["family"] == "purification"                                          # no family column: legacy rows
    assert s["mean_time"] == pytest.approx(1.0)


def test_lower_better_flips_only_signed_gains():
    hb = one(summarize(hand_rows(False), n_boot=0))
    lb = one(summarize(hand_rows(True), n_boot=0))
    assert lb["attack_gain"] == pytest.approx(-0.2)
    assert lb["defended_gain"] == pytest.approx(-0.025)
    assert lb["movement_worst"] == pytest.approx((-0.2 + 0.15) / 2)               # max(-.2, -.5), max(.15, NaN)
    assert lb["score_error_cell"] == pytest.approx((0.1 + 0.0 + 0.05 + 0.15) / 2)
    for col in ["robust_abs_gain", "robust_rel_gain", "nonpurified_abs_gain", "both_defended_rel_gain",
                "similarity_score", "bias"]:
        assert lb[col] == pytest.approx(hb[col])


def test_lower_better_as_stored_integers_and_strings():
    for flag in (1, "True", "1"):
        assert one(summarize(hand_rows(flag), n_boot=0))["attack_gain"] == pytest.approx(-0.2)
    assert one(summarize(hand_rows(0), n_boot=0))["attack_gain"] == pytest.approx(0.2)


def test_relative_gain_uses_absolute_clear_score():
    # negative-scored metric: c = -5, da = -4 -> |c - da| / |c| = 0.2 (the study's c + 1e-6 gives -0.2)
    s = one(summarize(make_rows(1, clear=-5.0, defended_attacked=-4.0, range_lo=-10.0, range_hi=0.0), n_boot=0))
    assert s["robust_rel_gain"] == pytest.approx(0.2, rel=1e-6)
    assert s["robust_abs_gain"] == pytest.approx(0.1)


def test_range_normalises_per_row_and_psnr_clipping():
    rows = make_rows(2, clear=[0.0, 0.0], defended_attacked=[1.0, 1.0], range_hi=[10.0, 100.0],
                     q_ssim_rgb_c_da=[1.0, 1.0], q_psnr_rgb_c_da=[250.0, -np.inf])
    s = one(summarize(rows, n_boot=0))
    assert s["robust_abs_gain"] == pytest.approx((0.1 + 0.01) / 2)
    # PSNR above the 100 dB cap is clipped; a non-finite similarity (here -inf) is dropped like NaN
    assert s["similarity_score"] == pytest.approx(1 + 2.5)
    rows = make_rows(2, q_ssim_rgb_c_da=[1.0, 0.5], q_psnr_rgb_c_da=[250.0, 20.0])
    assert one(summarize(rows, n_boot=0))["similarity_score"] == pytest.approx((1 + 2.5 + 0.5 + 0.5) / 2)


def test_missing_adaptive_and_optional_columns_give_nan():
    rows = hand_rows().drop(columns=["defended_attacked_adaptive", "truth", "group", "q_psnr_rgb_c_da",
                                     "q_ssim_rgb_c_da", "defense_seconds"])
    s = one(summarize(rows, n_boot=20))
    for col in ["robust_abs_gain_adaptive", "robust_rel_gain_adaptive", "defended_gain_adaptive",
                "srocc_clear", "krocc_defended_attacked", "plcc_attacked", "similarity_score",
                "similarity_score_lo", "mean_time", "robust_abs_gain_adaptive_hi", "movement_adaptive",
                "cert_width", "cert_violation", "fit_seconds"]:
        assert np.isnan(s[col]), col
    assert s["robust_abs_gain"] == pytest.approx(0.1)


# ----------------------------------------------------------------------------- correlations
def _corr_rows(seed=0, lower_better=False, attack="A"):
    """Groups of sizes 6, 9, 4 and 80 (scipy path for KROCC), one of 2 images and one with
    constant truth (both excluded), ties in values and truth, and a NaN."""
    rng = np.random.default_rng(seed)
    sizes = {"g6": 6, "g9": 9, "g4": 4, "g80": 80, "g2": 2, "gconst": 5}
    parts = []
    for g, n in sizes.items():
        truth = rng.integers(0, 4, n).astype(float) if g != "gconst" else np.full(n, 3.0)
        noise = rng.normal(0, 1.0, n)
        c = np.round(truth + noise, 0)                 # rounding -> ties
        parts.append(pd.DataFrame({
            "image": [f"{g}_{i}" for i in range(n)], "group": g, "truth": truth,
            "clear": c, "attacked": c + rng.normal(0, 2, n), "defended_clear": c + rng.normal(0, 0.5, n),
            "defended_attacked": rng.normal(0, 1, n)}))
    df = pd.concat(parts, ignore_index=True)
    df.loc[3, "defended_attacked"] = NAN
    n = len(df)
    return make_rows(n, **{k: df[k].to_numpy() for k in df.columns}, lower_better=lower_better, attack=attack)


def _expected(rows, col, sign=1.0):
    """Weighted mean of per-group scipy correlations (groups with >=3 images, non-constant)."""
    acc = {"srocc": [], "plcc": [], "krocc": [], "w": []}
    for _, g in rows.groupby("group"):
        x, y = sign * g[col].to_numpy(float), g["truth"].to_numpy(float)
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
            continue
        acc["srocc"].append(stats.spearmanr(x, y).statistic)
        acc["plcc"].append(stats.pearsonr(x, y).statistic)
        acc["krocc"].append(stats.kendalltau(x, y).statistic)
        acc["w"].append(len(x))
    w = np.array(acc["w"], float)
    return {k: float(np.sum(np.array(v) * w) / w.sum()) for k, v in acc.items() if k != "w"}


@pytest.mark.parametrize("lower_better", [False, True])
def test_correlations_match_scipy_per_group(lower_better):
    rows = _corr_rows(lower_better=lower_better)
    s = one(summarize(rows, n_boot=0))
    sign = -1.0 if lower_better else 1.0
    for name in ["clear", "attacked", "defended_clear", "defended_attacked"]:
        exp = _expected(rows, name, sign)
        for k in ("srocc", "plcc", "krocc"):
            assert s[f"{k}_{name}"] == pytest.approx(exp[k], abs=1e-12), (k, name)
    # SROCC(c, dc) over the whole cell, not per truth group, and without sign correction
    assert s["srocc_clear_vs_defended_clear"] == pytest.approx(
        stats.spearmanr(rows["clear"], rows["defended_clear"]).statistic, abs=1e-12)


def test_sign_correction_flips_correlation():
    hb = one(summarize(_corr_rows(lower_better=False), n_boot=0))
    lb = one(summarize(_corr_rows(lower_better=True), n_boot=0))
    assert lb["srocc_clear"] == pytest.approx(-hb["srocc_clear"])
    assert lb["srocc_clear_vs_defended_clear"] == pytest.approx(hb["srocc_clear_vs_defended_clear"])
    assert hb["srocc_clear"] > 0.3          # clear = truth + noise agrees with the truth


def test_correlations_over_attacks_are_computed_per_attack_then_weighted():
    a, b = _corr_rows(seed=1, attack="A"), _corr_rows(seed=2, attack="B").iloc[:60]
    b = b.assign(image=a["image"].iloc[:60].to_numpy())      # same images, another attack
    total = one(summarize(pd.concat([a, b], ignore_index=True), by=("metric", "defense"), n_boot=0))
    ea, eb = _expected(a, "defended_attacked"), _expected(b, "defended_attacked")
    # weights: valid rows of counted groups in each attack
    def weight(rows):
        w = 0
        for _, g in rows.groupby("group"):
            x, y = g["defended_attacked"].to_numpy(float), g["truth"].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() >= 3 and np.ptp(x[ok]) > 0 and np.ptp(y[ok]) > 0:
                w += ok.sum()
        return w
    wa_, wb_ = weight(a), weight(b)
    exp = (ea["srocc"] * wa_ + eb["srocc"] * wb_) / (wa_ + wb_)
    assert total["srocc_defended_attacked"] == pytest.approx(exp, abs=1e-12)
    assert total["n"] == len(a)                                 # distinct images


def test_truth_all_nan_and_too_small_groups_give_nan():
    rows = _corr_rows().assign(truth=NAN)
    s = one(summarize(rows, n_boot=0))
    assert np.isnan(s["srocc_clear"]) and np.isnan(s["plcc_defended_attacked"]) and np.isnan(s["krocc_attacked"])
    assert np.isfinite(s["srocc_clear_vs_defended_clear"])
    small = make_rows(2, clear=[1.0, 2.0], truth=[1.0, 2.0])
    assert np.isnan(one(summarize(small, n_boot=0))["srocc_clear"])


def test_missing_group_column_means_one_group():
    rows = _corr_rows().drop(columns=["group"])
    s = one(summarize(rows, n_boot=0))
    x, y = rows["clear"], rows["truth"]
    assert s["srocc_clear"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert s["krocc_clear"] == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)


# ----------------------------------------------------------------------------- bootstrap
def _noisy_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.uniform(0, 10, n)
    return make_rows(n, clear=c, attacked=c + rng.normal(2, 1, n), defended_clear=c,
                     defended_attacked=c + rng.normal(0.5, 1, n), q_ssim_rgb_c_da=rng.uniform(0.5, 1, n),
                     q_psnr_rgb_c_da=rng.uniform(20, 40, n))


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rows = _noisy_rows(200)
    s1 = one(summarize(rows, seed=3))
    s2 = one(summarize(rows, seed=3))
    s3 = one(summarize(rows, seed=4))
    for col in ["robust_abs_gain", "nonpurified_abs_gain", "attack_gain", "movement_transfer", "similarity_score",
                "score_error_cell"]:
        assert s1[f"{col}_lo"] < s1[col] < s1[f"{col}_hi"], col
        assert s1[f"{col}_lo"] == s2[f"{col}_lo"] and s1[f"{col}_hi"] == s2[f"{col}_hi"]
        assert s1[f"{col}_lo"] != s3[f"{col}_lo"]


def test_bootstrap_width_matches_normal_theory_and_narrows():
    # the percentile CI of a mean of ~iid values is close to mean ± 1.96·sd/√n (CLT);
    # 1000 resamples put ~5% Monte-Carlo noise on the width, so allow 15%.
    for n in (100, 2000):
        rows = _noisy_rows(n, seed=n)
        s = one(summarize(rows, seed=0))
        v = (rows["attacked"] - rows["clear"]) / 10
        expected = 2 * 1.959964 * v.std(ddof=0) / np.sqrt(n)
        assert s["attack_gain_hi"] - s["attack_gain_lo"] == pytest.approx(expected, rel=0.15)
    w_small = one(summarize(_noisy_rows(50), seed=0))
    w_big = one(summarize(_noisy_rows(5000), seed=0))
    assert (w_big["robust_abs_gain_hi"] - w_big["robust_abs_gain_lo"]) < \
        0.25 * (w_small["robust_abs_gain_hi"] - w_small["robust_abs_gain_lo"])


def test_bootstrap_resamples_images_not_rows():
    # The same images attacked twice with identical results: resampling images gives exactly the
    # CI of one attack; resampling rows would see 2n values and a narrower interval.
    one_attack = _noisy_rows(150)
    twice = pd.concat([one_attack, one_attack.assign(attack="B")], ignore_index=True)
    a = one(summarize(one_attack, by=("metric", "defense"), seed=1))
    b = one(summarize(twice, by=("metric", "defense"), seed=1))
    for col in ["robust_abs_gain_lo", "robust_abs_gain_hi", "similarity_score_hi"]:
        assert b[col] == pytest.approx(a[col], rel=1e-12)


def test_bootstrap_ignores_nan_values():
    rows = _noisy_rows(100)
    rows.loc[:9, "defended_attacked"] = NAN
    s = one(summarize(rows))
    assert s["robust_abs_gain_lo"] < s["robust_abs_gain"] < s["robust_abs_gain_hi"]
    assert s["robust_abs_gain"] == pytest.approx(
        (np.abs(rows["clear"] - rows["defended_attacked"]) / 10).iloc[10:].mean())


# ----------------------------------------------------------------------------- worst case
def test_worst_case_takes_max_over_attacks_per_image():
    # R = 10.  img0: A |5-6|=1, B max(|5-3|=2, |5-8|=3) -> 3;  img1: A max(.5, 1) -> 1, B .5
    a = make_rows(2, attack="A", clear=[5.0, 2.0], defended_clear=[5.0, 2.0],
                  defended_attacked=[6.0, 2.5], defended_attacked_adaptive=[NAN, 1.0])
    b = make_rows(2, attack="B", clear=[5.0, 2.0], defended_clear=[5.0, 2.0],
                  defended_attacked=[3.0, 1.5], defended_attacked_adaptive=[8.0, NAN])
    other = make_rows(2, attack="A", defense="E", clear=[5.0, 2.0], defended_attacked=[5.0, 2.0])
    w = worst_case(pd.concat([a, b, other], ignore_index=True), n_boot=200)
    d = w[w["defense"] == "D"].iloc[0]
    assert d["attacks"] == 2 and d["n"] == 2
    assert d["robust_abs_gain_worst"] == pytest.approx((0.3 + 0.1) / 2)
    assert d["robust_abs_gain_worst_nonadaptive"] == pytest.approx((0.2 + 0.05) / 2)
    # movement (dc = c, bias 0): img0 max(0.1, -0.2, 0.3) = 0.3; img1 max(0.05, -0.1, -0.05) = 0.05
    assert d["movement_worst"] == pytest.approx((0.3 + 0.05) / 2)
    assert d["score_error"] == pytest.approx((0.3 + 0.05) / 2) and d["bias"] == 0
    assert d["fidelity"] == pytest.approx(1 - 0.175)
    assert d["movement_transfer_worst"] == pytest.approx((0.1 + 0.05) / 2)      # max(.1, -.2), max(.05, -.1)
    assert d["movement_adaptive_worst"] == pytest.approx((0.3 + 0.0) / 2)       # .3; img1 max(-.05, 0)
    assert d["score_error_transfer"] == pytest.approx((0.1 + 0.05) / 2)
    assert d["n_adaptive"] == 2
    for col in ("robust_abs_gain_worst", "score_error", "fidelity"):
        assert d[f"{col}_lo"] <= d[col] <= d[f"{col}_hi"], col
    e = w[w["defense"] == "E"].iloc[0]
    # E: da = c but dc = 0 (make_rows' default): |c - da| sees nothing, the bias 5/10, 2/10 is an error
    assert e["attacks"] == 1 and e["robust_abs_gain_worst"] == 0.0 and e["n_adaptive"] == 0
    assert e["bias"] == pytest.approx(0.35)
    assert e["score_error"] == pytest.approx((0.5 + 0.5 + 0.2 + 0.2) / 2)       # movement s(da - dc) = bias here


def test_worst_case_is_at_least_every_single_attack():
    rng = np.random.default_rng(0)
    parts = []
    for atk in "ABC":
        r = _noisy_rows(300, seed=0).assign(attack=atk)
        r["defended_attacked"] = r["clear"] + rng.normal(0, 1 + "ABC".index(atk), 300)
        parts.append(r)
    rows = pd.concat(parts, ignore_index=True)
    w = one(worst_case(rows, seed=0))
    per_attack = summarize(rows, n_boot=0)["robust_abs_gain"]
    assert w["robust_abs_gain_worst"] > per_attack.max()
    assert w["attacks"] == 3 and w["n"] == 300


# ----------------------------------------------------------------------------- two axes
def test_two_axis_pareto_and_rank_by_hand():
    worst = pd.DataFrame({
        "metric": "m",
        "defense": ["A", "B", "C", "D", "E", "F", "G"],
        "family": ["purification"] * 6 + ["training"],
        "attacks": [2, 1, 1, 1, 1, 1, 1],
        "score_error": [0.1, 0.3, 0.2, 0.1, 1.5, 0.0, 0.4],
        "clear_similarity_score": [2.0, 3.0, 1.5, 2.0, 1.0, NAN, NAN],
    })
    t = two_axis(worst).set_index("defense")
    # fidelity = 1 - clip(score_error, 0, 1): E clipped to 0
    assert t["fidelity"].to_dict() == pytest.approx(
        {"A": 0.9, "B": 0.7, "C": 0.8, "D": 0.9, "E": 0.0, "F": 1.0, "G": 0.6})
    # G is a training defense: image untouched -> lossless quality 3.5, cost 0; F measured nothing
    assert t.loc["G", "quality"] == 3.5 and t.loc["G", "quality_cost"] == 0.0
    assert t.loc["G", "quality_note"] == "image untouched (lossless)"
    assert t.loc["A", "quality_note"] == "measured" and t.loc["F", "quality_note"] == "not measured"
    assert t.loc["B", "quality_cost"] == pytest.approx(0.5)
    assert t.loc["A", "attacks"] == 2
    # C is dominated by A; E by everything; F has no quality -> never on the front; A/D tie; G has the best quality
    assert t["pareto"].to_dict() == {"A": True, "B": True, "C": False, "D": True, "E": False, "F": False, "G": True}
    # fidelity ranks: F 1, A/D 2.5, C 4, B 5, G 6, E 7; quality ranks: G 1, B 2, A/D 3.5, C 5, E 6
    assert t["rank_score"].drop("F").to_dict() == pytest.approx(
        {"A": 3.0, "B": 3.5, "C": 4.5, "D": 3.0, "E": 6.5, "G": 3.5})
    assert t["rank"].drop("F").to_dict() == {"A": 1.0, "B": 3.0, "C": 5.0, "D": 1.0, "E": 6.0, "G": 3.0}
    assert np.isnan(t.loc["F", "rank"])
    assert "score_error" in t.attrs["rank_formula"]


def test_two_axis_from_worst_case_output():
    rows = pd.concat([_noisy_rows(30).assign(defense=d, q_ssim_rgb_c_dc=q, q_psnr_rgb_c_dc=40.0)
                      for d, q in [("D1", 0.9), ("D2", 0.8)]], ignore_index=True)
    w = worst_case(rows, n_boot=100)
    t = two_axis(w)
    assert list(t["defense"]) == ["D1", "D2"]
    assert t["quality"].tolist() == pytest.approx([1.9, 1.8])
    assert t["fidelity"].tolist() == pytest.approx((1 - w["score_error"].clip(0, 1)).tolist())
    assert (t["fidelity_lo"] <= t["fidelity"]).all() and (t["fidelity"] <= t["fidelity_hi"]).all()
    assert list(t.columns[:3]) == ["metric", "defense", "family"]


# ----------------------------------------------------------------------------- honest robustness
def _cell(defense, c, a, dc, da, dad, **kw):
    n = len(c)
    return make_rows(n, defense=defense, clear=c, attacked=a, defended_clear=dc, defended_attacked=da,
                     defended_attacked_adaptive=dad, range_lo=0.0, range_hi=1.0, **kw)


def _shift_rows(k, seed=0, n=40):
    """An attack raising a higher-better score by g ~ U(0.10, 0.20); 'shift' only adds k to every score."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.3, 0.6, n)
    a = c + rng.uniform(0.10, 0.20, n)
    return pd.concat([_cell("none", c, a, c, a, a), _cell("shift", c, a, c + k, a + k, a + k)], ignore_index=True)


@pytest.mark.parametrize("k", [-0.3, -0.15, -0.05, 0.0, 0.1])
def test_constant_shift_defense_does_not_fool_score_error(k):
    rows = _shift_rows(k)
    w = worst_case(rows, n_boot=200).set_index("defense")
    s = summarize(rows, n_boot=0).set_index("defense")
    # new axis: bias |k| + movement s(a + k - c - k) = |k| + g  >=  g (undefended), i.e. never lower
    assert w.loc["shift", "score_error"] >= w.loc["none", "score_error"] - 1e-12
    assert w.loc["shift", "score_error"] == pytest.approx(w.loc["none", "score_error"] + abs(k))
    assert w.loc["shift", "movement_worst"] == pytest.approx(w.loc["none", "movement_worst"])
    assert s.loc["shift", "score_error_cell"] == pytest.approx(s.loc["none", "score_error_cell"] + abs(k))
    t = two_axis(w.reset_index()).set_index("defense")
    assert t.loc["shift", "fidelity"] <= t.loc["none", "fidelity"]


def test_constant_shift_fools_the_study_gain():
    # k = -0.15 cancels the mean attack gain 0.15: |c - da| = |g - 0.15| <= 0.05 looks like a strong defense
    rows = _shift_rows(-0.15)
    s = summarize(rows, n_boot=0).set_index("defense")
    w = worst_case(rows, n_boot=0).set_index("defense")
    assert s.loc["none", "robust_abs_gain"] == pytest.approx(0.15, abs=0.02)
    assert s.loc["shift", "robust_abs_gain"] < 0.05 < 0.15 / 2          # fooled: 3x smaller than undefended
    assert s.loc["shift", "score_error_cell"] == pytest.approx(0.15 + s.loc["none", "score_error_cell"])
    assert w.loc["shift", "robust_abs_gain_worst"] < w.loc["none", "robust_abs_gain_worst"]
    assert w.loc["shift", "score_error"] > w.loc["none", "score_error"]


def test_small_transfer_large_adaptive_gain_does_not_rank_first():
    # X: transfer movement 0.02, adaptive 0.40; Y: 0.10 / 0.10; both leave the clean score and image as they are
    c = np.linspace(0.2, 0.5, 10)
    q = dict(q_ssim_rgb_c_dc=0.95, q_psnr_rgb_c_dc=40.0)
    rows = pd.concat([_cell("X", c, c + 0.3, c, c + 0.02, c + 0.40, **q),
                      _cell("Y", c, c + 0.3, c, c + 0.10, c + 0.10, **q)], ignore_index=True)
    s = summarize(rows, n_boot=0).set_index("defense")
    assert s.loc["X", "robust_abs_gain"] < s.loc["Y", "robust_abs_gain"]   # transfer-only would pick X
    w = worst_case(rows, n_boot=0)
    assert w.set_index("defense")["score_error_transfer"].to_dict() == pytest.approx({"X": 0.02, "Y": 0.10})
    t = two_axis(w).set_index("defense")
    assert t["fidelity"].to_dict() == pytest.approx({"X": 0.60, "Y": 0.90})
    assert t.loc["Y", "rank"] == 1 and t.loc["X", "rank"] == 2
    assert t["pareto"].to_dict() == {"X": False, "Y": True}


def test_nan_adaptive_values_are_ignored_not_zero():
    # img0: transfer movement +0.1, adaptive +0.4;  img1: transfer -0.1, adaptive NaN (not run)
    c = np.array([0.5, 0.5])
    rows = _cell("D", c, c + 0.2, c, c + np.array([0.1, -0.1]), c + np.array([0.4, NAN]))
    s = one(summarize(rows, n_boot=200))
    assert s["movement_adaptive"] == pytest.approx(0.4)                   # NaN-as-0 would give 0.2
    assert s["movement_adaptive_lo"] == pytest.approx(0.4) and s["movement_adaptive_hi"] == pytest.approx(0.4)
    assert s["movement_worst"] == pytest.approx((0.4 - 0.1) / 2)          # NaN-as-0 would give 0.2
    w = one(worst_case(rows, n_boot=0))
    assert w["movement_adaptive_worst"] == pytest.approx(0.4)
    assert w["movement_worst"] == pytest.approx((0.4 + 0.0) / 2)          # img1: max(-0.1, NaN) clipped to 0
    assert w["n_adaptive"] == 1


def test_certified_and_training_columns():
    c = np.array([0.4, 0.5, 0.6])
    cert = _cell("smooth", c, c + 0.2, c + 0.01, c + 0.05, c + 0.3, family="certified",
                 cert_lo=c - 0.1, cert_hi=c + 0.1, cert_abstained=[0, 0, 1], cert_eps=0.5,
                 l2_c_a=[0.4, 0.4, 0.4], l2_c_ad=[0.4, 0.9, 0.4], defense_forwards=100.0)
    s = one(summarize(cert, n_boot=0))
    assert s["family"] == "certified"
    assert s["cert_width"] == pytest.approx(0.2)                          # abstained row dropped
    assert s["cert_abstain_rate"] == pytest.approx(1 / 3)
    # checks: img0 da inside, dad 0.7 outside [0.3, 0.5] -> 1/2; img1 da inside, dad l2 0.9 > eps unchecked -> 0
    assert s["cert_violation"] == pytest.approx((0.5 + 0.0) / 2)
    assert s["mean_forwards"] == 100.0
    assert np.isnan(s["similarity_score"]) and np.isnan(s["clear_similarity_score"])
    t = one(two_axis(worst_case(cert, n_boot=0)))
    assert t["quality"] == 3.5 and t["quality_cost"] == 0.0 and t["family"] == "certified"


def test_boot_scores_come_from_the_table():
    assert BOOT_SCORES == score_table.ci_columns("summary")
    s = summarize(hand_rows(), n_boot=0)
    assert [c for c in s.columns if c.endswith("_lo")] == [f"{c}_lo" for c in BOOT_SCORES]


# ----------------------------------------------------------------------------- validation
def test_input_errors():
    with pytest.raises(InputError, match="rows"):
        summarize([1, 2])
    with pytest.raises(InputError, match="clear"):
        summarize(hand_rows().drop(columns=["clear"]))
    with pytest.raises(InputError, match="range"):
        summarize(hand_rows().assign(range_hi=0.0))
    with pytest.raises(InputError, match="lower_better"):
        summarize(hand_rows().assign(lower_better=None))
    with pytest.raises(InputError, match="worst_case"):
        two_axis(pd.DataFrame({"metric": ["m"]}))
    with pytest.raises(InputError, match="worst_case"):
        two_axis(summarize(hand_rows(), n_boot=0))             # the per-attack summary is refused


def test_empty_rows_give_empty_frames():
    empty = hand_rows().iloc[:0]
    s = summarize(empty)
    assert len(s) == 0 and "robust_abs_gain_lo" in s.columns and "krocc_clear" in s.columns
    w = worst_case(empty)
    assert len(w) == 0 and "score_error_lo" in w.columns
    assert len(two_axis(w)) == 0 and "quality_cost" in two_axis(w).columns
