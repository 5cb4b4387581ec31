"""The default run (`iqaguard run` / `make run`) shows the expected physics."""
import pytest

import iqaguard as ig
from iqaguard.registry import ATTACKS, DEFENSES, canonical


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    return ig.benchmark(out=out), out


def _cell(summary, attack, defense):
    a = canonical(ATTACKS.create(attack))
    d = canonical(DEFENSES.create(defense))
    row = summary[(summary.attack == a) & (summary.defense == d)]
    assert len(row) == 1
    return row.iloc[0]


def test_quick_suite_physics(quick):
    res, out = quick
    assert res.provenance["suite"] == "quick" and res.errors == 0
    attack = "ifgsm:eps=4/255,alpha=0.25/255"
    undefended = _cell(res.summary, attack, "no-defense")
    jpeg = _cell(res.summary, attack, "jpeg:quality=50")
    # ifgsm moves NIQE toward better, clearly: the whole bootstrap 95% CI is above zero
    assert undefended.attack_gain_lo > 0.02
    # JPEG q50 takes most of that gain away: the attack achieves far less through the defense
    assert jpeg.defended_gain < 0.5 * undefended.attack_gain
    assert jpeg.robust_abs_gain < undefended.robust_abs_gain
    html = (out / "index.html").read_text()
    assert "ifgsm" in html and "jpeg" in html and "no-defense" in html
    for f in ("iqaguard.db", "results.csv", "summary.csv", "index.html"):
        assert (out / f).exists()


def test_quick_rerun_reuses_everything(quick):
    res, out = quick
    again = ig.benchmark(out=out)
    assert again.computed == 0 and again.reused == len(res.rows)
