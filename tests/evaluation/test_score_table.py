"""The score table drives summarize/worst_case/two_axis, the report legend and docs/methods/scores.md."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from iqaguard.evaluation import score_table
from iqaguard.evaluation.scores import BOOT_SCORES, _per_row, summarize, two_axis, worst_case
from iqaguard.report.html import MAIN_SUMMARY, SCORE_LEGEND

DOC = Path(__file__).resolve().parents[2] / "docs" / "methods" / "scores.md"


def _rows():
    rng = np.random.default_rng(0)
    parts = []
    for atk in ("A", "B"):
        for d in ("D1", "D2"):
            c = rng.uniform(0, 1, 6)
            parts.append(pd.DataFrame({
                "metric": "m", "attack": atk, "defense": d, "dataset": "ds", "image": [f"i{i}" for i in range(6)],
                "clear": c, "attacked": c + 0.2, "defended_clear": c + 0.01, "defended_attacked": c + 0.1,
                "defended_attacked_adaptive": c + 0.15, "truth": rng.uniform(0, 1, 6), "group": "g",
                "lower_better": False, "range_lo": 0.0, "range_hi": 1.0}))
    return pd.concat(parts, ignore_index=True)


def _expected(frame, keys):
    cols = list(keys)
    for n in score_table.columns(frame):
        cols += [n] + ([f"{n}_lo", f"{n}_hi"] if n in score_table.ci_columns(frame) else [])
    return cols


def test_doc_block_matches_the_table():
    # on failure: run `python -m iqaguard.evaluation.score_table` and commit docs/methods/scores.md
    assert score_table.doc_block(DOC) == score_table.render_markdown()


def test_frames_follow_the_table_order():
    rows = _rows()
    s = summarize(rows, n_boot=10)
    assert list(s.columns) == _expected("summary", ["metric", "attack", "defense", "family"])
    w = worst_case(rows, n_boot=10)
    assert list(w.columns) == _expected("worst", ["metric", "defense", "family"])
    t = two_axis(w)
    assert list(t.columns) == _expected("two_axis", ["metric", "defense", "family"])
    # every per-row quantity summarize averages is a table column
    assert set(_per_row(rows).columns) <= set(score_table.columns("summary"))
    assert BOOT_SCORES == score_table.ci_columns("summary")


def test_legend_and_main_columns_come_from_the_table():
    assert SCORE_LEGEND == score_table.legend()
    assert list(SCORE_LEGEND) == [s.name for s in score_table.SCORES]
    assert MAIN_SUMMARY == score_table.main_summary()
    assert set(MAIN_SUMMARY) <= set(score_table.columns("summary"))


def test_entries_are_well_formed():
    for s in score_table.SCORES:
        assert s.better in ("higher", "lower", None), s.name
        assert s.frames and set(s.frames) <= set(score_table.FRAMES), s.name
        assert s.families and set(s.families) <= set(score_table.FAMILIES), s.name
        assert s.formula and s.legend and s.label, s.name
        assert not (s.ci and s.added_by != "scores"), s.name


def test_cli_rewrites_a_stale_block(tmp_path):
    doc = tmp_path / "scores.md"
    doc.write_text(f"intro\n\n{score_table.BEGIN}\nold table\n{score_table.END}\n\nafter\n", encoding="utf-8")
    src = str(Path(score_table.__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-m", "iqaguard.evaluation.score_table", str(doc)], check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": src})
    assert "updated" in out.stdout
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("intro\n") and text.endswith("\nafter\n") and "old table" not in text
    assert score_table.doc_block(doc) == score_table.render_markdown()
    assert score_table.update_doc(doc) is False           # idempotent


def test_report_renders_the_three_frames(tmp_path):
    from iqaguard.report import render_report

    rows = _rows()
    rows.loc[rows.defense == "D2", "family"] = "training"
    summary, worst = summarize(rows, n_boot=10), worst_case(rows, n_boot=10)
    html = render_report(None, summary, {}, tmp_path, two_axis=two_axis(worst), worst=worst).read_text()
    for label in ("score error", "bias", "movement (adaptive)", "quality cost", "image untouched (lossless)",
                  "badge wrapper wrapper-training"):
        assert label in html, label
