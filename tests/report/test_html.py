"""The HTML report: sections, formatted numbers, self-containment, escaping, optional inputs."""
from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqaguard.errors import InputError
from iqaguard.report import format_number, render_report

SECTIONS = ("summary", "tradeoff", "worst-case", "strips", "provenance")


class Page(HTMLParser):
    """Collects every tag's attributes and, per table, its class and rows of cell texts."""

    def __init__(self, text: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.tables: list[dict] = []
        self._stack: list[dict] = []
        self._cell: list[str] | None = None
        self._section: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id")
        elif tag == "table":
            self._stack.append({"cls": a.get("class", ""), "section": self._section, "rows": []})
        elif tag == "tr" and self._stack:
            self._stack[-1]["rows"].append([])
        elif tag in ("td", "th") and self._stack:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._stack:
            self._stack[-1]["rows"][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table" and self._stack:
            self.tables.append(self._stack.pop())

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def ids(self):
        return {a["id"] for _, a in self.tags if "id" in a}

    def tables_with(self, cls):
        return [t for t in self.tables if cls in t["cls"].split()]

    def images(self):
        return [a["src"] for t, a in self.tags if t == "img"]


def render(tmp_path, **kw) -> tuple[str, Page]:
    path = render_report(out_dir=tmp_path / "out", **kw)
    assert path == tmp_path / "out" / "index.html"
    text = path.read_text(encoding="utf-8")
    return text, Page(text)


def column(table: dict, header_prefix: str) -> list[str]:
    hdr = table["rows"][0]
    j = next(i for i, h in enumerate(hdr) if h.startswith(header_prefix))
    return [r[j] for r in table["rows"][1:]]


def decode(src: str) -> Image.Image:
    assert src.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True)))


def test_format_number():
    # three significant digits, trailing zeros kept, NaN/None as an en dash
    assert [format_number(x) for x in (0.6, 0.12345, 12.345, 0.012345, 0.9996, 99.96, -0.5)] == \
        ["0.600", "0.123", "12.3", "0.0123", "1.00", "100", "-0.500"]
    assert [format_number(x) for x in (float("nan"), None, np.nan, pd.NA)] == ["–"] * 4
    assert format_number(7) == "7" and format_number(np.int64(7)) == "7" and format_number(0.0) == "0"
    assert format_number(123456.7) == "123457" and format_number(1.5e-6) == "1.50e-06"
    assert format_number(True) == "yes" and format_number(float("inf")) == "∞"


def test_full_report(tmp_path, report_inputs):
    text, page = render(tmp_path, **report_inputs)
    assert set(SECTIONS) <= page.ids()
    assert "<title>iqaguard report</title>" in text

    # header counts from results/summary
    for label, n in (("datasets", 1), ("metrics", 2), ("attacks", 2), ("defenses", 3), ("images", 8)):
        assert re.search(rf'class="count-{label}">{n}</b>', text), label

    # per-metric summary tables: 2 attacks × 3 defenses, numbers at 3 significant digits with CI
    tables = page.tables_with("summary-table")
    assert [t["section"] for t in tables] == ["summary", "summary"]
    psnr = tables[0]
    assert len(psnr["rows"]) == 1 + 6
    gains = column(psnr, "robust abs gain")
    assert gains[0] == "0.123[0.103, 0.153]"  # 0.12345 [0.10345, 0.15345]
    assert "0.333[0.313, 0.363]" in gains     # third defense, second attack
    assert set(column(psnr, "time (s)")) == {"0.0123", "0.0246", "0.0369"}
    assert set(column(psnr, "n")) == {"8"}
    # legend: one line per shown score with its direction
    assert "lower is better" in text and "higher is better" in text

    # trade-off: two plots, Pareto flags and rank from two_axis, and the stated rank formula
    trade = page.tables_with("tradeoff-table")
    assert len(trade) == 2
    assert column(trade[0], "Pareto") == ["yes", "no", "yes"]
    assert column(trade[0], "rank ↓") == ["1", "3", "2"]  # stored as floats, shown as integers
    assert column(trade[0], "fidelity") == ["0.872", "0.772", "0.672"]
    assert report_inputs["two_axis"].attrs["rank_formula"] in text

    # worst case over attacks, with CI, next to the mean over attacks from the summary
    worst = page.tables_with("worst-table")
    assert len(worst) == 2 and column(worst[0], "worst-case") == [
        "0.133[0.123, 0.143]", "0.233[0.223, 0.243]", "0.333[0.323, 0.343]"]
    assert column(worst[0], "mean abs gain") == ["0.128", "0.228", "0.328"]  # (g + g + 0.01) / 2

    # embedded images decode; strips downscaled to ≤ 256 px keeping the aspect ratio (384×96 -> 256×64)
    srcs = page.images()
    assert len(srcs) == 2 + 3
    sizes = [decode(s).size for s in srcs]
    assert sizes[2:] == [(256, 64)] * 3
    assert "clean: 31.2" in text and "attacked: 40.5" in text and "defended attacked: 32.0" in text

    # provenance table
    prov = [t for t in page.tables if t["section"] == "provenance"][0]["rows"]
    assert ["git_sha", "0123abcd"] in prov and ["torch_version", "2.13.0"] in prov
    assert ["spec", '{"metrics": ["psnr", "niqe"]}'] in prov


def test_self_contained(tmp_path, report_inputs):
    text, page = render(tmp_path, **report_inputs)
    refs = [a[k] for _, a in page.tags for k in ("src", "href") if k in a]
    assert refs, "expected some src/href attributes"
    for ref in refs:
        assert ref.startswith(("data:", "#")), ref
    assert not re.search(r"https?://", text.replace("data:image/png;base64,", ""))
    assert not any(t == "link" and a.get("rel") == "stylesheet" for t, a in page.tags)
    assert not any(t == "script" and "src" in a for t, a in page.tags)
    assert "@import" not in text and "url(" not in text


def test_nan_shown_as_dash(tmp_path, report_inputs):
    _, page = render(tmp_path, **report_inputs)
    psnr = page.tables_with("summary-table")[0]
    defenses = column(psnr, "defense")
    both = column(psnr, "both-defended")
    # median-blur rows have NaN both_defended_abs_gain in the synthetic summary
    assert [b for d, b in zip(defenses, both) if d == "median-blur"] == ["–", "–"]
    assert [b for d, b in zip(defenses, both) if d != "median-blur"] == ["0.200"] * 4


def test_html_escaping(tmp_path, report_inputs):
    text, page = render(tmp_path, **report_inputs)
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert sum(t == "script" for t, _ in page.tags) == 1  # only the inline table sorter
    # the parser sees the name as cell text again, i.e. it was escaped exactly once
    assert "<script>alert(1)</script>" in column(page.tables_with("summary-table")[0], "defense")


def test_minimal_inputs(tmp_path):
    """Only the key columns and one score; no results, strips, two_axis, worst or provenance."""
    summary = pd.DataFrame({"metric": ["psnr", "psnr"], "attack": ["ifgsm", "ifgsm"],
                            "defense": ["jpeg", "none"], "robust_abs_gain": [0.25, np.nan]})
    text, page = render(tmp_path, results=pd.DataFrame(), summary=summary, provenance={})
    assert set(SECTIONS) <= page.ids()
    (table,) = page.tables_with("summary-table")
    assert table["rows"][0] == ["defense", "attack", "robust abs gain ↓"]
    assert column(table, "robust abs gain") == ["0.250", "–"]
    assert page.images() == []
    assert "No worst-case data" in text and "No image strips" in text and "No provenance" in text
    assert "Not enough data for the trade-off plot" in text


def test_tradeoff_without_two_axis(tmp_path, report_inputs):
    """Fidelity = 1 − mean robust_abs_gain over attacks, quality = clean similarity; no Pareto column."""
    kw = dict(report_inputs, two_axis=None)
    text, page = render(tmp_path, **kw)
    trade = page.tables_with("tradeoff-table")
    assert len(trade) == 2 and trade[0]["rows"][0] == ["defense", "fidelity ↑", "quality ↑"]
    # jpeg: gains 0.12345 and 0.13345 -> 1 − 0.12845 = 0.87155
    assert trade[0]["rows"][1] == ["jpeg:quality=50", "0.872", "1.30"]
    assert trade[1]["rows"][3] == ["<script>alert(1)</script>", "0.672", "1.65"]
    assert len(page.images()) == 2 + 3
    assert "Orange points" not in text


def test_extra_scores_and_default_rank_formula(tmp_path, report_inputs):
    """Scores beyond the study's main set go to a collapsed table; all-NaN columns are dropped there."""
    summary = report_inputs["summary"].assign(
        robust_rel_gain=0.5, robust_abs_gain_adaptive=np.nan, srocc_attacked=0.25, my_custom_score=3.0)
    two_axis = report_inputs["two_axis"].copy()
    two_axis.attrs = {}
    text, page = render(tmp_path, **dict(report_inputs, summary=summary, two_axis=two_axis))
    main = page.tables_with("summary-table")[0]["rows"][0]
    extra = page.tables_with("summary-extra")
    assert len(extra) == 2
    assert extra[0]["rows"][0] == ["defense", "attack", "robust rel gain ↓", "SROCC attacked", "my_custom_score"]
    assert not any(h.startswith(("robust rel", "SROCC attacked", "my_custom", "robust abs gain (adaptive)"))
                   for h in main)
    assert column(extra[0], "my_custom_score") == ["3.00"] * 6
    assert "mean of the defense&#39;s fidelity rank and quality rank" in text

    # an adaptive column with data joins the main table next to its non-adaptive score
    summary["robust_abs_gain_adaptive"] = 0.4
    _, page = render(tmp_path, **dict(report_inputs, summary=summary))
    main = page.tables_with("summary-table")[0]["rows"][0]
    i = main.index("robust abs gain ↓")
    assert main[i + 1] == "robust abs gain (adaptive) ↓"


def test_strip_from_png_path_and_missing_panel(tmp_path):
    arr = np.zeros((200, 600, 3), np.uint8)
    arr[:, 300:] = 255
    png = tmp_path / "clean.png"
    Image.fromarray(arr).save(png)
    strip = dict(metric="niqe", attack="ifgsm", defense="jpeg", image="x", clean=png,
                 attacked=arr.astype(np.float32) / 255, defended=None, scores={"clear": 4.0})
    summary = pd.DataFrame({"metric": ["niqe"], "attack": ["ifgsm"], "defense": ["jpeg"]})
    text, page = render(tmp_path, results=pd.DataFrame(), summary=summary, provenance={}, strips=[strip])
    imgs = [decode(s) for s in page.images()]
    assert [im.size for im in imgs] == [(256, 85), (256, 85)]
    left, right = np.asarray(imgs[0].convert("RGB"))[40, [10, 245]]
    assert left.tolist() == [0, 0, 0] and right.tolist() == [255, 255, 255]
    assert "attacked: –" in text and "defended attacked: –" in text


def test_bad_inputs(tmp_path):
    summary = pd.DataFrame({"metric": ["m"], "attack": ["a"], "defense": ["d"]})
    with pytest.raises(InputError, match="summary"):
        render_report(pd.DataFrame(), [{"metric": "m"}], {}, tmp_path)
    bad = dict(metric="m", attack="a", defense="d", image="i", clean=np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(InputError, match="strips"):
        render_report(pd.DataFrame(), summary, {}, tmp_path, strips=[bad])
    bad["clean"] = np.full((4, 4, 3), 2.0)
    with pytest.raises(InputError, match=r"\[0,1\]"):
        render_report(pd.DataFrame(), summary, {}, tmp_path, strips=[bad])
    assert not (tmp_path / "index.html").exists()
