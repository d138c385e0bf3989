"""The truth tables in a real browser (headless Chromium, as test_report_browser.py): a
report with a [pairs] table and one mismatch renders the table, colours each outcome apart,
marks the mismatch, and logs nothing to the console."""

from __future__ import annotations

from pathlib import Path

from linklab.report.aggregate import load_results
from linklab.report.render import render
from tests.live.test_report_browser import browser  # noqa: F401  (the fixture)
from tests.unit.test_report_truth import pairs, results_dir


def test_truth_table_renders_in_chromium(browser, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "report" / "index.html"
    render(load_results(results_dir(tmp_path, pairs(mismatch=("c2", "c3"), n=12))), out)
    browser.get(out.as_uri())
    shot = tmp_path / "truth.png"
    table = browser.find_element("id", "truth-tenants-v4-tcp-80")
    browser.execute_script("arguments[0].scrollIntoView()", table)
    assert table.screenshot(str(shot)) and shot.stat().st_size > 2_000
    size = browser.execute_script("const r = arguments[0].getBoundingClientRect(); "
                                  "return [r.width, r.height];", table)
    assert size[0] > 200 and size[1] > 200, size          # 12 rows x 15 columns laid out
    cells = browser.execute_script("""
        return Array.from(arguments[0].querySelectorAll('td.cell')).map(td =>
            [td.className.split(' ')[1], td.textContent, getComputedStyle(td).backgroundColor]);
        """, table)
    assert len(cells) == 12 * 15
    colours = {cls: bg for cls, _text, bg in cells}
    assert {"pass", "isolated", "fail", "none"} <= set(colours)
    assert len({colours[c] for c in ("pass", "isolated", "fail")}) == 3, colours
    assert [text for cls, text, _bg in cells if cls == "fail"] == ["✗"]
    marked = browser.execute_script(
        "return document.querySelector('#truth-tenants-v4-tcp-80 td.fail').title")
    assert "c2 → c3 tcp/80 v4: expected blocked, observed pass" in marked
    problems = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems
