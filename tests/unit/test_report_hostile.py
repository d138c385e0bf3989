"""Hostile strings in someone else's results directory (tests/hostile.py) render as text; the
browser half (no script ran, each payload visible) is tests/live/test_report_browser.py."""

from __future__ import annotations

from pathlib import Path

from linklab.report import history
from linklab.report.aggregate import load_results
from linklab.report.render import render
from tests.hostile import PAYLOADS, hostile_results


def test_hostile_strings_render_escaped(tmp_path: Path) -> None:
    """A datapath name with unbalanced mathtext ('$x^$') made matplotlib raise ValueError
    and `linklab report` fail; now every payload lands escaped and no markup gets through."""
    out = tmp_path / "report" / "index.html"
    rendered = render(load_results(hostile_results(tmp_path / "results")), out)
    page = out.read_text()
    assert rendered.charts >= 5
    for markup in ("<script", "<img", "</title><", "</svg><script"):
        assert markup not in page, markup
    assert "&lt;script&gt;" in page and PAYLOADS["template"] in page


def test_hostile_strings_in_the_history_page_render_escaped(tmp_path: Path) -> None:
    """``linklab report --history`` over three such runs: charts drawn, no markup through."""
    for day in (1, 2, 3):
        hostile_results(tmp_path / "results" / f"2025010{day}T100000Z-night")
    out = tmp_path / "history" / "index.html"
    assert history.render(history.build(tmp_path / "results"), out) >= 3
    page = out.read_text()
    for markup in ("<script", "<img", "</title><", "</svg><script"):
        assert markup not in page, markup
