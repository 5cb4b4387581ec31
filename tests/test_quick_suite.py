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
    # the quick suite itself, on the first 30 of its 60 images to keep the test short
    return ig.benchmark(out=out, limit=30), out


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
    """The default run has the adaptive column for the cheap defenses, BPDA beats the transfer
    attack through JPEG on the learned metric, and the report shows worst case and flags."""
    res, out = quick
    attack = "ifgsm:eps=4/255,alpha=0.25/255"
    rows = res.rows
    for d, w in (("jpeg:quality=50", "bpda"), ("color-quantization", "bpda"), ("random-noise", "eot4")):
        dd = canonical(DEFENSES.create(d))
        sel = rows[rows.defense == dd]
        assert (sel.adaptive_wrapper.dropna() == w).all() and sel.defended_attacked_adaptive.notna().sum() >= 8
    jpeg = _cell(res.summary, "iqg-cnn", attack, "jpeg:quality=50")
    # paired: the transfer attack's gain on the same images that have the adaptive (BPDA) result
    assert jpeg.defended_gain_adaptive > jpeg.defended_gain_paired
    assert jpeg["reliability"] == "adaptive-checked" and "zero-gradient" in jpeg["flags"]
    w = res.worst
    jw = w[w.defense == canonical(DEFENSES.create("jpeg:quality=50"))]
    assert (jw.robust_abs_gain_worst >= jw.robust_abs_gain_worst_nonadaptive).all()
    html = (out / "index.html").read_text()
    assert "worst-case abs gain" in html and "Honesty flags" in html and "adaptive-checked" in html


def test_quick_rerun_reuses_everything(quick):
    res, out = quick
    again = ig.benchmark(out=out, limit=30)
    assert again.computed == 0 and again.reused == len(res.rows)


def test_all_available_purifiers_are_ranked_on_both_axes(tmp_path):
    """Every purifier that needs no downloaded weights runs in one grid, and the two-axis summary
    (score fidelity, quality preservation) ranks each of them."""
    from iqaguard import InputError

    usable = []
    from iqaguard.registry import DEFENSES

    for name in ig.list_defenses():
        if getattr(DEFENSES.factory(name), "family", "purification") != "purification":
            continue                          # certified defenses have their own cell
        try:
            ig.create_defense(name)
        except InputError as exc:            # published weights not on this machine
            assert "weights file" in str(exc)
            continue
        usable.append(name)
    assert len(usable) >= 14
    res = ig.benchmark(metrics=["iqg-cnn"], attacks=["fgsm:eps=4/255"], defenses=usable,
                       dataset="bundled:size=128", limit=5, out=tmp_path)
    assert res.errors == 0
    two = res.two_axis
    assert len(two) == len(usable)
    assert two[["fidelity", "quality", "rank"]].notna().all().all()
    assert two["pareto"].any()
    html = (tmp_path / "index.html").read_text()
    for name in usable:
        assert name in html
