"""The static site: ranking on the adaptive worst case, tables, not-evaluated rows, escaping."""
from __future__ import annotations

import re

from iqaguard.leaderboard.site import RANK_FORMULA, build

from .conftest import HOSTILE, HOSTILE_PAPER, make_entry


def _overview_order(html: str) -> list[str]:
    table = html.split('class="sortable overview-table', 1)[1].split("</table>", 1)[0]
    return re.findall(r'<tr>\s*<td class="key" data-sort="([^"]*)"', table)


def _overview_column(html: str, header: str) -> list[float]:
    table = html.split('class="sortable overview-table', 1)[1].split("</table>", 1)[0]
    col = [h.strip() for h in re.findall(r"<th\b[^>]*>([^<]*)", table)].index(header)
    rows = table.split("<tbody>", 1)[1].split("</tr>")[:-1]
    return [float(re.findall(r'data-sort="([^"]*)"', r)[col]) for r in rows]


def test_board_ranks_escapes_and_lists_missing(board_entries, tmp_path):
    index = build(board_entries, tmp_path / "site")
    html = index.read_text()
    # ranked by fidelity gain over no-defense (synthetic shifts 0.02 < 0.08 < 0.2 < 0.3), the formula stated
    assert _overview_order(html) == ["jpeg:quality=50", "median-blur", "&lt;script&gt;alert(1)&lt;/script&gt;",
                                     "no-defense"]
    assert "no-defense has no entry on" not in html
    assert RANK_FORMULA.split(":")[0] in html and "adaptive worst case first" in html
    # per-metric and per-attack tables exist, with CIs
    assert html.count("metric-table") >= 2 and html.count("attack-table") >= 2 and 'class="ci"' in html
    # weights-less defenses: not evaluated, with the command that produces the entry
    for name, file in (("mprnet", "mprnet_denoise.pth"), ("diffpure", "256x256_diffusion_uncond.pt"),
                       ("at-apgd-lpips-4", "vgg16-397923af.pth")):    # LPIPS-VGG labels need ImageNet VGG-16
        assert f"not evaluated: needs WEIGHTS ({file})" in html
        assert f"iqaguard submit {name} --suite quick" in html
    # certified defenses on `standard`: why they have no entry there, with the command all the same
    assert "not evaluated on this suite: at the study&#39;s n = 1000" in html and "175 CPU-hours" in html
    assert "iqaguard submit drs --suite standard" in html and "iqaguard submit drs --suite quick" in html
    # markup from entries is text: no injected tag, only the page's own sorter script
    pages = [index] + sorted((tmp_path / "site").glob("defense-*.html"))
    assert len(pages) == 5                            # the overview + one page per defense
    for p in pages:
        text = p.read_text()
        assert HOSTILE not in text and "<img src=x" not in text and 'onerror="alert' not in text
        assert text.count("<script") == 1                # the inline sorter only
        assert 'href="javascript:' not in text           # a non-http(s) link is shown as text
    hostile_page = next(p for p in pages if "script" in p.name)
    text = hostile_page.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "Robust &lt;img src=x onerror=&#34;alert(2)&#34;&gt; paper &lt;/table&gt;&lt;script&gt;alert(3)&lt;/script&gt;" in text
    assert HOSTILE_PAPER not in text
    # a defense page: cost columns, honesty flags section, strips (3 panels per metric), provenance
    jpeg = (tmp_path / "site" / "defense-quick-jpeg_quality=50.html").read_text()
    assert "cost-table" in jpeg and "defense seconds / image" in jpeg and "metric forwards / score" in jpeg
    assert jpeg.count("data:image/png;base64,") == 8     # 2 metrics × (3 strip panels + 1 presets plot)
    assert jpeg.count('class="plot presets-plot"') == 2
    assert "https://example.org/paper" in jpeg and "provenance" in jpeg


def test_defenses_covering_different_metrics_rank_on_their_gain_over_no_defense(tmp_path):
    """A defense with an entry only on a metric the attacks hit hard is not ranked below no-defense for lack of
    the easy metrics (mean fidelity over covered metrics would put it there: 0.55 < 0.61 < 0.63)."""
    root = tmp_path / "entries"
    for metric, base, wide in (("niqe", 0.5, 0.48), ("iqg-cnn", 0.02, 0.015)):
        make_entry(root, "no-defense", base, metric=metric)
        make_entry(root, "wide", wide, metric=metric)
    make_entry(root, "narrow", 0.3, metric="niqe")
    make_entry(root, "narrow", 0.3, metric="brisque")      # no baseline there: left out of its gain, and said so
    html = build(root, tmp_path / "site").read_text()
    assert _overview_order(html) == ["narrow", "wide", "no-defense"]
    gain, mean = _overview_column(html, "fidelity gain"), _overview_column(html, "mean fidelity")
    assert gain[0] > gain[1] > gain[2] == 0.0            # no-defense is the zero of the gain
    assert mean[0] < mean[2] < mean[1]                    # the order the old mean-fidelity rank gave
    assert "no-defense has no entry on brisque" in html and "iqaguard submit no-defense --suite quick" in html


def test_a_costly_defense_with_entries_on_some_metrics_lists_the_others(tmp_path):
    """A certified defense submitted with --metrics psnr on `standard`: on the board with that entry,
    and listed for the other six metrics with its cost and the command that adds them."""
    root = tmp_path / "entries"
    make_entry(root, "ms", 0.01, suite="standard", metric="psnr", family="certified", name="ms")
    html = build(root, tmp_path / "site").read_text()
    section = html.split('id="suite-standard"', 1)[1]
    assert _overview_order(section) == ["ms"]
    rest = ["niqe", "brisque", "iqg-cnn", "iqg-resnet", "ssim", "ms_ssim"]
    assert f"not evaluated on {', '.join(rest)}: at the study&#39;s n = 1000" in section
    assert f"iqaguard submit ms --suite standard --metrics {','.join(rest)}" in section
    assert "not evaluated on this suite: as ms (1050 metric passes" in section     # rs: no entry at all


def test_entries_of_another_suite_version_are_left_out(board_entries, tmp_path):
    import json

    path = board_entries / "quick" / "niqe" / "median_blur.json"
    data = json.loads(path.read_text())
    data["suite"]["hash"] = "f" * 64                  # computed with an edited quick suite
    path.write_text(json.dumps(data))
    html = build(board_entries, tmp_path / "site").read_text()
    assert "Left out (computed with another version of this suite, hash differs)" in html
    assert str(path) in html
    order = _overview_order(html)
    assert "median-blur" in order                     # still there through its iqg-cnn entry, 1 of 2 metrics
    table = html.split('class="sortable overview-table', 1)[1].split("</table>", 1)[0]
    assert '<td class="key" data-sort="1/2">1/2</td>' in table


def test_defense_pages_plot_the_presets_of_their_defense(tmp_path):
    """Every preset page of a defense shows the same presets plot (all its presets, per metric);
    another defense's page plots only its own."""
    root = tmp_path / "entries"
    for metric in ("niqe", "iqg-cnn"):
        for q, shift in ((30, 0.05), (50, 0.02), (70, 0.1)):
            make_entry(root, f"jpeg:quality={q}", shift, metric=metric, name="jpeg")
        make_entry(root, "median-blur", 0.08, metric=metric)
    site = build(root, tmp_path / "site").parent

    def plots(page):
        text = (site / page).read_text()
        return re.findall(r'class="plot presets-plot"><img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', text)

    q30, q50 = plots("defense-quick-jpeg_quality=30.html"), plots("defense-quick-jpeg_quality=50.html")
    median = plots("defense-quick-median-blur.html")
    assert len(q30) == len(median) == 2                      # one per metric
    assert all("presets of jpeg on" in alt for alt, _ in q30)
    assert q30 == q50                                         # the same three presets on every jpeg page
    assert {png for _, png in q30}.isdisjoint(png for _, png in median)
