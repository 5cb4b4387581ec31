"""The one score table: every aggregate column, its formula, direction, families and legend.

``summarize``/``worst_case``/``two_axis`` (scores.py) take their column lists and order from it,
``BOOT_SCORES`` is its ``ci`` column, the report's legend is built from it, and the block between
``<!-- score-table:begin -->`` and ``<!-- score-table:end -->`` in ``docs/methods/scores.md`` is
rendered from it (``python -m iqaguard.evaluation.score_table [path]`` rewrites that block; a test
fails when they disagree).

Notation per row (one image in one metric × attack × defense cell): c clean score, a attacked,
dc defended clean, da defended attacked (transfer), dad defended attacked (adaptive), R the
metric's range, s = −1 for lower-better metrics and +1 otherwise.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Score", "SCORES", "FAMILIES", "FRAMES", "columns", "ci_columns", "legend", "main_summary",
           "render_markdown", "update_doc", "BEGIN", "END"]

FAMILIES = ("purification", "training", "certified")
FRAMES = ("summary", "worst", "two_axis")
"""summary = summarize (per metric × attack × defense); worst = worst_case (per metric × defense);
two_axis = two_axis (per metric × defense)."""
BEGIN, END = "<!-- score-table:begin -->", "<!-- score-table:end -->"
ALL = FAMILIES
P = ("purification",)
C = ("certified",)


@dataclass(frozen=True)
class Score:
    name: str
    frames: tuple[str, ...]
    label: str
    formula: str
    legend: str
    better: str | None = None          # "higher" | "lower" | None (context, not a defense score)
    families: tuple[str, ...] = ALL
    ci: bool = False                   # gets <name>_lo / <name>_hi (95% paired image bootstrap)
    study: bool = False                # computed as the reference study does
    main: bool = False                 # shown in the report's main summary table
    added_by: str = "scores"           # who fills the column: "scores" (scores.py) or the module downstream


S, W, T = ("summary",), ("worst",), ("two_axis",)
_MEAN = "mean over images of "

SCORES: tuple[Score, ...] = (
    # ---------------------------------------------------------------- counts
    Score("n", S + W, "n", "distinct images (dataset, image) in the group", "number of images", main=True),
    Score("attacks", W + T, "attacks", "distinct attacks run against the defense",
          "number of attacks the worst case is taken over"),
    Score("n_adaptive", W + T, "adaptive images", "images with at least one finite dad",
          "images whose worst case includes an adaptive result (0 = transfer only)"),
    # ---------------------------------------------------------------- honest robustness (ext)
    Score("bias", S + W, "bias", _MEAN + "|c − dc| / R",
          "the defense's own shift of the clean score (clean-fidelity cost)", "lower", ci=True, main=True),
    Score("movement_transfer", S, "movement (transfer)", _MEAN + "s·(da − dc) / R",
          "how far the transfer attack moves the defended score toward its goal", "lower", ci=True, main=True),
    Score("movement_adaptive", S, "movement (adaptive)", _MEAN + "s·(dad − dc) / R (images with dad only)",
          "the same for the adaptive attack made against defense.protect(metric)", "lower", ci=True, main=True),
    Score("movement_worst", S + W, "worst movement",
          "summary: " + _MEAN + "max(s·(da − dc), s·(dad − dc)) / R, NaN ignored; worst: " + _MEAN
          + "max over attacks and transfer/adaptive of max(that, 0)",
          "the attack's success through the defense, worst of transfer and adaptive", "lower", ci=True),
    Score("movement_transfer_worst", W, "worst movement (transfer)",
          _MEAN + "max over attacks of max(s·(da − dc) / R, 0)",
          "worst movement over transfer attacks only", "lower"),
    Score("movement_adaptive_worst", W, "worst movement (adaptive)",
          _MEAN + "max over attacks of max(s·(dad − dc) / R, 0), images with dad only",
          "worst movement over adaptive attacks only", "lower"),
    Score("score_error_cell", S, "score error", _MEAN + "|c − dc| / R + max(s·(da − dc), s·(dad − dc), 0) / R",
          "bias + worst movement in this cell: an error a score shift cannot cancel", "lower", ci=True, main=True),
    Score("score_error", W + T, "score error",
          _MEAN + "max over the image's attack rows of |c − dc| / R + max(s·(da − dc), s·(dad − dc), 0) / R "
          "(= bias + worst movement when the defense is deterministic)",
          "bias + worst-case movement over every attack, transfer and adaptive", "lower", ci=True),
    Score("score_error_transfer", W, "score error (transfer only)",
          "score_error with the transfer movement s·(da − dc) only",
          "the same without adaptive results: compare to see how much transfer underestimates", "lower"),
    Score("fidelity", W + T, "fidelity", "1 − clip(score_error, 0, 1); _lo/_hi = 1 − clip(score_error_hi/_lo, 0, 1)",
          "score fidelity: 1 − worst-case score error (adaptive included)", "higher", ci=True),
    # ---------------------------------------------------------------- study gains
    Score("robust_abs_gain", S, "robust abs gain", _MEAN + "|c − da| / R",
          "|clean − defended-attacked| / R; mixes the defense's bias with the attack", "lower",
          ci=True, study=True, main=True),
    Score("robust_abs_gain_adaptive", S, "robust abs gain (adaptive)", _MEAN + "|c − dad| / R",
          "robust abs gain against the adaptive attack", "lower", ci=True, main=True),
    Score("robust_rel_gain", S, "robust rel gain", _MEAN + "|c − da| / (|c| + 1e-6)",
          "|clean − defended-attacked| / |clean|", "lower", study=True),
    Score("robust_rel_gain_adaptive", S, "robust rel gain (adaptive)", _MEAN + "|c − dad| / (|c| + 1e-6)",
          "robust rel gain against the adaptive attack", "lower"),
    Score("nonpurified_abs_gain", S, "undefended abs gain", _MEAN + "|c − a| / R",
          "|clean − attacked| / R: the attack without any defense", ci=True, study=True, main=True),
    Score("nonpurified_rel_gain", S, "undefended rel gain", _MEAN + "|c − a| / (|c| + 1e-6)",
          "|clean − attacked| / |clean|", study=True),
    Score("both_defended_abs_gain", S, "both-defended abs gain", _MEAN + "|dc − da| / R",
          "|defended-clean − defended-attacked| / R", "lower", study=True, main=True),
    Score("both_defended_abs_gain_adaptive", S, "both-defended abs gain (adaptive)", _MEAN + "|dc − dad| / R",
          "both-defended abs gain against the adaptive attack", "lower"),
    Score("both_defended_rel_gain", S, "both-defended rel gain", _MEAN + "|dc − da| / (|dc| + 1e-6)",
          "|defended-clean − defended-attacked| / |defended-clean|", "lower", study=True),
    Score("both_defended_rel_gain_adaptive", S, "both-defended rel gain (adaptive)",
          _MEAN + "|dc − dad| / (|dc| + 1e-6)", "both-defended rel gain against the adaptive attack", "lower"),
    Score("robust_abs_gain_worst", W, "worst-case abs gain",
          _MEAN + "max over attacks of max(|c − da|, |c − dad|) / R",
          "study-style |clean − defended-attacked| worst case (adaptive included)", "lower", ci=True),
    Score("robust_abs_gain_worst_nonadaptive", W, "worst-case abs gain (transfer only)",
          _MEAN + "max over attacks of |c − da| / R", "the same over transfer results only", "lower"),
    # ---------------------------------------------------------------- signed gains (ext)
    Score("attack_gain", S, "attack gain", _MEAN + "s·(a − c) / R",
          "how far the attack pushes the undefended score toward its goal", ci=True, main=True),
    Score("defended_gain", S, "defended gain", "= movement_transfer (earlier name, kept for flags.py)",
          "alias of movement (transfer)", "lower"),
    Score("defended_gain_adaptive", S, "defended gain (adaptive)", "= movement_adaptive (earlier name)",
          "alias of movement (adaptive)", "lower"),
    Score("defended_gain_paired", S, "movement (transfer, paired)",
          _MEAN + "s·(da − dc) / R over the images that have a dad",
          "the transfer movement on exactly the images with an adaptive result", "lower", main=True),
    # ---------------------------------------------------------------- quality preservation
    Score("similarity_score", S, "similarity", _MEAN + "SSIM_rgb(c, da) + min(PSNR_rgb(c, da), 100) / 40",
          "RGB SSIM + PSNR/40 between the clean and the defended-attacked image", "higher",
          P, ci=True, study=True, main=True),
    Score("clear_similarity_score", S + W, "clean similarity",
          _MEAN + "SSIM_rgb(c, dc) + min(PSNR_rgb(c, dc), 100) / 40",
          "RGB SSIM + PSNR/40 between the clean and the defended-clean image", "higher",
          P, ci=True, study=True, main=True),
    Score("similarity_score_luma", S, "similarity (luma)", _MEAN + "SSIM_Y(c, da) + min(PSNR_Y(c, da), 100) / 40",
          "luma SSIM (Gaussian window) + luma PSNR/40, clean vs defended-attacked", "higher", P),
    Score("clear_similarity_score_luma", S, "clean similarity (luma)",
          _MEAN + "SSIM_Y(c, dc) + min(PSNR_Y(c, dc), 100) / 40",
          "luma SSIM + luma PSNR/40, clean vs defended-clean", "higher", P),
    Score("ms_ssim_luma", S, "MS-SSIM (luma)", _MEAN + "MS-SSIM_Y(c, da)",
          "luma MS-SSIM, clean vs defended-attacked", "higher", P),
    Score("clear_ms_ssim_luma", S, "clean MS-SSIM (luma)", _MEAN + "MS-SSIM_Y(c, dc)",
          "luma MS-SSIM, clean vs defended-clean", "higher", P),
    Score("quality", T, "quality",
          "purification: clear_similarity_score; training/certified: 1 + 100/40 = 3.5 (image untouched)",
          "quality preservation: clean-vs-defended-clean similarity", "higher"),
    Score("quality_cost", T, "quality cost", "3.5 − quality", "similarity lost by defending (0 = lossless)",
          "lower"),
    Score("quality_note", T, "quality note", "'measured', 'not measured' or 'image untouched (lossless)'",
          "where the quality value comes from"),
    # ---------------------------------------------------------------- correlations (study)
    *(Score(f"{k}_{t}", S, f"{k.upper()} {lab}",
            f"{kname} of s·{sym} vs truth, per truth group, weighted by group size",
            f"{kname} of {desc} scores vs ground truth", None if t in ("clear", "attacked") else "higher",
            study=True, main=(k == "srocc" and t != "attacked") or (t == "defended_attacked"))
      for k, kname in (("srocc", "Spearman"), ("plcc", "Pearson"), ("krocc", "Kendall tau-b"))
      for t, sym, lab, desc in (("clear", "c", "clean", "clean"), ("attacked", "a", "attacked", "attacked"),
                                ("defended_clear", "dc", "def. clean", "defended-clean"),
                                ("defended_attacked", "da", "def. attacked", "defended-attacked"))),
    Score("srocc_clear_vs_defended_clear", S + W, "SROCC(c, dc)",
          "Spearman of c vs dc within each cell (worst: weighted over attacks)",
          "how well the defense keeps the metric's ranking of clean images", "higher", study=True),
    # ---------------------------------------------------------------- certified
    Score("cert_width", S, "certificate width", _MEAN + "(cert_hi − cert_lo) / R, non-abstained rows",
          "width of the certified score interval", "lower", C, main=True),
    Score("cert_abstain_rate", S, "abstain rate", "mean of cert_abstained",
          "share of images the smoothed metric abstains on", "lower", C, main=True),
    Score("cert_violation", S, "certificate violations",
          "share of (row, da/dad) with ℓ2 perturbation ≤ cert_eps and the value outside [cert_lo, cert_hi]",
          "checks the certificate on the actual attacks (should be ≈ 0)", "lower", C, main=True),
    # ---------------------------------------------------------------- cost
    Score("mean_time", S, "time (s)", "mean of defense_seconds", "defense time per image, seconds", "lower",
          main=True),
    Score("mean_forwards", S, "forwards", "mean of defense_forwards", "metric forward passes per defended image",
          "lower"),
    Score("fit_seconds", S, "fit time (s)", "mean of fit_seconds", "time to fit the defense (training)", "lower",
          ("training",)),
    # ---------------------------------------------------------------- added downstream
    Score("unreliable_cells", W, "unverified cells", "count of cells without an adaptive result",
          "attacks against this defense without an adaptive result (transfer-only, or flagged: unreliable)", "lower",
          added_by="evaluation/flags.py"),
    Score("adaptive_cells", W, "adaptive cells", "count of cells with an adaptive result",
          "attacks against this defense with an adaptive (BPDA/EOT/query) result", added_by="evaluation/flags.py"),
    Score("robust_abs_gain_mean", W, "mean abs gain", "mean over attacks of robust_abs_gain",
          "study robust abs gain averaged over attacks", "lower", added_by="report/html.py"),
    Score("pareto", T, "Pareto", "no other defense of the metric has fidelity ≥ and quality ≥, one strictly",
          "on the Pareto front of fidelity and quality"),
    Score("fidelity_rank", T, "fidelity rank", "rank of fidelity within the metric (1 = best, ties averaged)",
          "rank by fidelity", "lower"),
    Score("quality_rank", T, "quality rank", "rank of quality within the metric (1 = best, ties averaged)",
          "rank by quality", "lower"),
    Score("rank_score", T, "rank score", "(fidelity_rank + quality_rank) / 2", "mean of the two ranks", "lower"),
    Score("rank", T, "rank", "order of rank_score within the metric (ties share the lower rank)",
          "combined rank (1 = best)", "lower"),
)

_BY_NAME = {s.name: s for s in SCORES}
assert len(_BY_NAME) == len(SCORES), "duplicate score names"


def columns(frame: str, added_by: str | None = "scores") -> list[str]:
    """Column names of ``frame`` in table order (``added_by=None``: also those filled downstream)."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    return [s.name for s in SCORES if frame in s.frames and (added_by is None or s.added_by == added_by)]


def ci_columns(frame: str) -> list[str]:
    """Columns of ``frame`` that get ``_lo``/``_hi`` bootstrap bounds."""
    return [n for n in columns(frame) if _BY_NAME[n].ci]


def legend() -> dict[str, tuple[str, str, str | None]]:
    """name -> (label, one-line meaning, better direction), in table order."""
    return {s.name: (s.label, s.legend + (" (study)" if s.study else ""), s.better) for s in SCORES}


def main_summary() -> list[str]:
    """Summary columns the report's main table shows."""
    return [s.name for s in SCORES if s.main and "summary" in s.frames]


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The generated doc block (without the markers): one table per output frame."""
    titles = {"summary": "`summarize` — one row per (metric, attack, defense)",
              "worst": "`worst_case` — one row per (metric, defense)",
              "two_axis": "`two_axis` — one row per (metric, defense)"}
    out = ["<!-- generated by `python -m iqaguard.evaluation.score_table`; edit score_table.py, not this block -->"]
    for frame in FRAMES:
        out += ["", f"#### {titles[frame]}", "",
                "| column | formula | better | families | CI | source | meaning |", "|---|---|---|---|---|---|---|"]
        for s in SCORES:
            if frame not in s.frames:
                continue
            fam = "all" if s.families == ALL else ", ".join(s.families)
            source = ("study" if s.study else "ext") + (f", added by {s.added_by}" if s.added_by != "scores" else "")
            out.append(f"| `{s.name}` | {_md(s.formula)} | {s.better or '–'} | {fam} | "
                       f"{'yes' if s.ci else ''} | {source} | {_md(s.legend)} |")
    return "\n".join(out) + "\n"


def _split(text: str, path: Path) -> tuple[str, str, str]:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{path}: needs exactly one {BEGIN} … {END} block")
    head, rest = text.split(BEGIN)
    body, tail = rest.split(END)
    return head, body, tail


def doc_block(path: str | Path) -> str:
    """The current generated block of the doc at ``path`` (between the markers)."""
    path = Path(path)
    return _split(path.read_text(encoding="utf-8"), path)[1].strip("\n") + "\n"


def update_doc(path: str | Path) -> bool:
    """Rewrite the block in ``path`` from the table; True if the file changed."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    head, body, tail = _split(text, path)
    new = f"{head}{BEGIN}\n{render_markdown()}{END}{tail}"
    if new != text:
        from iqaguard.atomic import write_text   # absolute: this module also runs as a script

        write_text(path, new)
    return new != text


DEFAULT_DOC = Path(__file__).resolve().parents[3] / "docs" / "methods" / "scores.md"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DOC
    print(f"{target}: {'updated' if update_doc(target) else 'up to date'}")
