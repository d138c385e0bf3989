"""The rendered report in a real browser: headless Chromium via chromedriver (selenium).

Renders the committed fixture (tests/data/results-sample) — or, when LINKLAB_REPORT_HTML names
a report (``make report`` sets it), that report — opens it from file://, takes a screenshot and
checks that every chart drew, the matrix is there, the console is clean and nothing was fetched.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from linklab.report import history
from linklab.report.aggregate import load_results
from linklab.report.render import render
from tests import DATA
from tests.hostile import PAYLOADS, hostile_results
from tests.unit.test_history import make_runs

SAMPLE = DATA / "results-sample"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run")


@pytest.fixture
def browser(tmp_path: Path):
    """A fresh headless Chromium (own profile dir under tmp_path), quit after the test."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (pip extra 'dev')")
    for tool, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(tool, os.X_OK):
            pytest.skip(f"{tool} missing (Debian package {package})")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1400,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=CHROMEDRIVER,
                                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def _report(tmp_path: Path) -> tuple[Path, Path | None]:
    """(report to open, directory to also keep the screenshot in)."""
    given = os.environ.get("LINKLAB_REPORT_HTML")
    if given:
        path = Path(given).resolve()
        assert path.is_file(), f"LINKLAB_REPORT_HTML={given}: no such report"
        return path, path.parent
    out = tmp_path / "report" / "index.html"
    render(load_results(SAMPLE), out)
    return out, None


def test_report_renders_in_chromium(browser, tmp_path: Path) -> None:
    report, keep = _report(tmp_path)
    browser.get(report.as_uri())
    full_height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1400, min(int(full_height) + 40, 16000))
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot)), "screenshot failed"
    assert shot.stat().st_size > 10_000
    if keep is not None:
        shutil.copy(shot, keep / "screenshot.png")

    # every section drawn, every chart an svg that drew something
    for section in ("summary", "environment", "connectivity", "dhcp", "throughput", "latency",
                    "cpu"):
        assert browser.find_elements("id", section), f"section #{section} missing"
    rankings = browser.execute_script(
        "return document.querySelectorAll('#summary table.ranking tr').length")
    assert rankings > 2, "the summary ranks no datapath"
    charts = browser.execute_script("""
        return Array.from(document.querySelectorAll('svg.chart')).map(s => {
            const r = s.getBoundingClientRect();
            return {id: s.id, w: r.width, h: r.height,
                    paths: s.querySelectorAll('path').length,
                    bars: Array.from(s.querySelectorAll('path')).filter(p => {
                        const b = p.getBBox(); return b.width > 1 && b.height > 1; }).length};
        });""")
    assert charts, "no chart in the page"
    for chart in charts:
        assert chart["w"] > 200 and chart["h"] > 100, f"{chart['id']} laid out empty: {chart}"
        assert chart["bars"] >= 2, f"{chart['id']} drew nothing: {chart}"
    if keep is None:  # the fixture holds two legs, each with all five charts
        ids = {c["id"] for c in charts}
        for kind in ("throughput", "efficiency", "latency-tcp", "latency-udp", "cpu"):
            assert sum(i.startswith(f"chart-{kind}-") for i in ids) == 2, (kind, sorted(ids))

    # the connectivity matrix, with coloured cells
    cells = browser.execute_script("""
        return Array.from(document.querySelectorAll('table.matrix td.cell')).map(td =>
            [td.className, getComputedStyle(td).backgroundColor]);""")
    assert cells, "connectivity matrix missing or empty"
    colours = {cls: bg for cls, bg in cells}
    assert len(set(colours.values())) == len(colours), f"outcomes share a colour: {colours}"

    # a clean console and no request leaving the file
    problems = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems
    urls = browser.execute_script("""
        return performance.getEntriesByType('resource').map(e => e.name)
            .concat(performance.getEntriesByType('navigation').map(e => e.name));""")
    leaving = [u for u in urls if not u.startswith(("file://", "data:", "about:"))]
    assert not leaving, leaving


def test_history_renders_in_chromium(browser, tmp_path: Path) -> None:
    """The history page over four runs (one kernel change): every chart drew its lines and
    points, the change is marked, nothing was fetched."""
    view = history.build(make_runs(tmp_path / "results", 4))
    out = tmp_path / "history" / "index.html"
    assert history.render(view, out) == len(view.metrics) >= 3
    browser.get(out.as_uri())
    shot = tmp_path / "history.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    charts = browser.execute_script("""
        return Array.from(document.querySelectorAll('svg.chart')).map(s => {
            const r = s.getBoundingClientRect();
            return {id: s.id, w: r.width, h: r.height,
                    marks: Array.from(s.querySelectorAll('path, use')).filter(p => {
                        const b = p.getBBox(); return b.width > 0 || b.height > 0; }).length};
        });""")
    assert len(charts) == len(view.metrics)
    for c in charts:
        assert c["w"] > 300 and c["h"] > 150 and c["marks"] >= 8, c
    rows = browser.execute_script(
        "return document.querySelectorAll('#runs tr.changed').length")
    assert rows == 1
    assert not [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert not [u for u in urls if not u.startswith(("file://", "data:", "about:"))]


def test_hostile_strings_render_as_text_in_chromium(browser, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    """A results directory whose tool errors, scenario names, why texts, datapath names and
    meta fields carry HTML/JS (tests/hostile.py): no script ran, no handler or javascript: URL
    reached the DOM, and every payload is on the page as text."""
    out = tmp_path / "report" / "index.html"
    render(load_results(hostile_results(tmp_path / "results")), out)
    browser.get(out.as_uri())
    ran = browser.execute_script("return window.__pwned || []")
    found = browser.execute_script("""
        const all = Array.from(document.querySelectorAll('*'));
        return {
          title: document.title,
          scripts: document.querySelectorAll('script').length,
          imgs: document.querySelectorAll('img').length,
          handlers: all.flatMap(e => Array.from(e.attributes)
              .filter(a => a.name.startsWith('on')).map(a => e.tagName + ' ' + a.name)),
          js_urls: all.flatMap(e => Array.from(e.attributes)
              .filter(a => /^\\s*javascript:/i.test(a.value)).map(a => e.tagName + ' ' + a.name)),
          sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
          text: document.body.innerText + '\\n' +
              all.map(e => e.getAttribute('title') || '').join('\\n') + '\\n' +
              Array.from(document.querySelectorAll('svg text')).map(t => t.textContent).join('\\n'),
          h1: document.querySelector('h1').innerText,
        };""")
    shown = {name: payload in found["text"] for name, payload in PAYLOADS.items()}
    retitled = found["title"].startswith("PWNED")     # the page's own title shows the payload
    request.node.user_properties += [("scripts_run", len(ran) + retitled),   # the drill reads
                                     ("payloads_shown", f"{sum(shown.values())}/{len(shown)}")]
    assert ran == [] and not retitled, (ran, found["title"])
    assert found["scripts"] == 0 and found["imgs"] == 0, found
    assert found["handlers"] == [] and found["js_urls"] == [], found
    for section in ("summary", "environment", "connectivity", "dhcp", "throughput"):
        assert section in found["sections"], f"section #{section} swallowed: {found['sections']}"
    assert PAYLOADS["title"] in found["h1"], found["h1"]
    assert all(shown.values()), f"payloads not shown as text: {shown}"
