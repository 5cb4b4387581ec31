"""The default run (`iqaguard run` / `make run`) shows the expected physics."""
import pytest

import iqaguard as ig
from iqaguard.registry import ATTACKS, DEFENSES, METRICS, canonical

# the module fixture runs the quick suite (~4–5 min on an idle 2-core machine); its setup counts
# toward the first test's timeout, so allow for a slower CI machine
pytestmark = pytest.mark.timeout(1500)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    # the quick suite itself, exactly as `make run` runs it
    return ig.benchmark(out=out), out


def _cell(summary, metric, attack, defense):
    m = canonical(METRICS.create(metric))
    a = canonical(ATTACKS.create(attack))
    d = canonical(DEFENSES.create(defense))
    row = summary[(summary.metric == m) & (summary.attack == a) & (summary.defense == d)]
    assert len(row) == 1
    return row.iloc[0]


@pytest.mark.parametrize("metric", ["niqe", "iqg-cnn"])
def test_quick_suite_physics(quick, metric):
    res, out = quick
    assert res.provenance["suite"] == "quick" and res.errors == 0
    attack = "ifgsm:eps=4/255,alpha=0.25/255"
    undefended = _cell(res.summary, metric, attack, "no-defense")
    jpeg = _cell(res.summary, metric, attack, "jpeg:quality=50")
    # ifgsm moves NIQE toward better, clearly: the whole bootstrap 95% CI is above zero
    assert undefended.attack_gain_lo > 0.02
    # JPEG q50 takes most of that gain away: the attack achieves far less through the defense
    assert jpeg.defended_gain < 0.5 * undefended.attack_gain
    assert jpeg.robust_abs_gain < undefended.robust_abs_gain
    html = (out / "index.html").read_text()
    assert "ifgsm" in html and "jpeg" in html and "no-defense" in html
    for f in ("iqaguard.db", "results.csv", "summary.csv", "index.html", "flags.csv", "worst_case.csv"):
        assert (out / f).exists()


def test_quick_suite_adaptive_columns(quick):
    """Every defended cell of the default run has its adaptive column (direct, BPDA or EOT), so no
    cell is reliable on transfer alone; adaptive ≥ transfer where the transfer attack is blunted."""
    res, out = quick
    attack = "ifgsm:eps=4/255,alpha=0.25/255"
    rows = res.rows
    assert rows.defended_attacked_adaptive.notna().all()
    for d, w in (("jpeg:quality=50", "bpda"), ("color-quantization", "bpda"), ("random-noise", "eot4"),
                 ("gaussian-blur", "none"), ("median-blur", "none"), ("upscale", "none"), ("no-defense", "direct")):
        sel = rows[rows.defense == canonical(DEFENSES.create(d))]
        assert (sel.adaptive_wrapper == w).all(), d
    s = res.summary
    assert set(s.reliability) <= {"reliable", "adaptive-checked"}
    # the transfer attack is blunted by these deterministic differentiable purifiers; attacking
    # through them directly gets (at least) as far, on the same images (numbers in the closing note)
    for d in ("gaussian-blur", "median-blur", "upscale"):
        c = _cell(s, "iqg-cnn", attack, d)
        assert c.defended_gain_adaptive >= c.defended_gain_paired, (d, c.defended_gain_adaptive, c.defended_gain_paired)
    jpeg = _cell(s, "iqg-cnn", attack, "jpeg:quality=50")
    assert jpeg.defended_gain_adaptive > jpeg.defended_gain_paired
    assert jpeg["reliability"] == "adaptive-checked" and "zero-gradient" in jpeg["flags"]
    w = res.worst
    jw = w[w.defense == canonical(DEFENSES.create("jpeg:quality=50"))]
    assert (jw.score_error >= jw.score_error_transfer).all()
    assert (jw.robust_abs_gain_worst >= jw.robust_abs_gain_worst_nonadaptive).all()
    # the ranking rests on the worst case with adaptive results: it is what two_axis ranks on
    two = res.two_axis.merge(w[["metric", "defense", "score_error"]], on=["metric", "defense"], suffixes=("", "_w"))
    assert (two.score_error - two.score_error_w).abs().max() < 1e-12
    assert res.two_axis.quality.notna().all()      # every purifier's quality cost is measured
    html = (out / "index.html").read_text()
    assert "Honesty flags" in html and "adaptive-checked" in html


def test_quick_rerun_reuses_everything(quick):
    res, out = quick
    again = ig.benchmark(out=out)
    assert again.computed == 0 and again.reused == len(res.rows)


def test_all_available_purifiers_are_ranked_on_both_axes(tmp_path):
    """Every purifier that needs no downloaded weights runs in one grid, and the two-axis summary
    (score fidelity, quality preservation) ranks each of them."""
    from iqaguard import InputError

    usable = []
    for name in ig.list_defenses():
        if DEFENSES.factory(name).family != "purification":
            continue
        try:
            ig.create_defense(name)
        except InputError as exc:            # published weights not on this machine
            assert "weights file" in str(exc)
            continue
        usable.append(name)
    assert len(usable) >= 14
    res = ig.benchmark(metrics=["iqg-cnn"], attacks=["fgsm:eps=4/255"], defenses=usable,
                       dataset="bundled:size=128", limit=5, out=tmp_path, eot_k=2)
    assert res.errors == 0
    two = res.two_axis
    assert len(two) == len(usable)
    assert two[["fidelity", "quality", "rank"]].notna().all().all()
    assert two["pareto"].any()
    flip = two[two.defense == "flip"].iloc[0]
    assert flip.quality_cost == 0          # a pure re-indexing loses no detail (judged after alignment)
    html = (tmp_path / "index.html").read_text()
    for name in usable:
        assert name in html
