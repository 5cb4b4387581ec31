"""The report shows reliability badges, the adaptive wrapper, the flag legend and the flags table."""
import pandas as pd

from iqaguard.evaluation.flags import FLAGS, RELIABILITY
from iqaguard.report import render_report


def test_flags_and_badges(tmp_path):
    summary = pd.DataFrame({
        "metric": ["m", "m"], "attack": ["pgd", "pgd"], "defense": ["jpeg", "blur"],
        "n": [3, 3], "movement_transfer": [0.05, 0.1], "defended_gain_paired": [0.05, float("nan")],
        "movement_adaptive": [0.2, float("nan")], "robust_abs_gain": [0.1, 0.2],
        "robust_abs_gain_adaptive": [0.25, float("nan")],
        "adaptive_wrapper": ["bpda", None], "flags": ["zero-gradient,randomized-score", None],
        "reliability": ["adaptive-checked", "reliable"]})
    flags = pd.DataFrame({"metric": ["m"], "attack": ["pgd"], "defense": ["jpeg"], "flag": ["zero-gradient"],
                          "detail": ["mean ‖∇‖ = 0 <b>x</b>"]})
    worst = pd.DataFrame({"metric": ["m"], "defense": ["jpeg"], "robust_abs_gain_worst": [0.3],
                          "unreliable_cells": [1], "adaptive_cells": [1]})
    html = render_report(None, summary, {}, tmp_path, flags=flags, worst=worst).read_text()
    assert 'id="flags"' in html and 'href="#flags"' in html
    for name in list(FLAGS) + list(RELIABILITY):
        assert f"flag-{name}" in html or f"status-{name}" in html
    # legend + the jpeg row of the main table (every column here is a main one: no "all scores" table)
    assert html.count('class="badge status status-adaptive-checked"') == 2
    assert 'class="badge wrapper wrapper-bpda"' in html
    assert html.count("badge flag flag-zero-gradient") >= 3           # legend, summary row, flags table
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html   # details are escaped
    assert "movement (transfer, paired)" in html and "unverified cells" in html


def test_no_flags_given(tmp_path):
    summary = pd.DataFrame({"metric": ["m"], "attack": ["a"], "defense": ["d"], "robust_abs_gain": [0.1]})
    html = render_report(None, summary, {}, tmp_path).read_text()
    assert "no flags computed" in html and 'class="legend flag-legend"' not in html
