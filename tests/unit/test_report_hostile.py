"""Hostile strings in someone else's results directory (tests/hostile.py) render as text; the
browser half (no script ran, each payload visible) is tests/live/test_report_browser.py."""

from __future__ import annotations

from pathlib import Path

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
