"""Format the view model (linklab.report.view) as one self-contained HTML page: Jinja2
templates, charts drawn as inline SVG. Nothing here computes a figure or a verdict."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from linklab.report import charts
from linklab.report.aggregate import Results, Rules
from linklab.report.sections.common import ChartSpec
from linklab.report.view import View, build
from linklab.results import atomic_write

TEMPLATES = Path(__file__).with_name("templates")


# ---------------------------------------------------------------------------------------------
# formatting filters


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits ('—' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, str):
        return value
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - mag)
    return f"{value:,.{decimals}f}"


def pct(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value * 100:+.1f} %" if signed else f"{value * 100:.1f} %"


@dataclass
class Rendered:
    path: Path
    seconds: float
    sections: list[str]
    charts: int


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report templates with the number filters."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    return env


def draw(spec: ChartSpec) -> str:
    """One chart of the view model as inline SVG."""
    return charts.grouped_bars(
        spec.frame, group=spec.group, series=spec.series, value=spec.value,
        chart_id=spec.chart_id, ylabel=spec.ylabel, title=spec.title, scale=spec.scale,
        low=spec.low, high=spec.high, log=spec.log, percent=spec.percent)


def html(view: View) -> tuple[str, int]:
    """The page of a view model, and how many charts it drew."""
    drawn: dict[str, Markup] = {}

    def chart(spec: ChartSpec) -> Markup:
        if spec.chart_id not in drawn:
            drawn[spec.chart_id] = Markup(draw(spec))
        return drawn[spec.chart_id]

    page = environment().get_template("report.html").render(v=view, chart=chart)
    return page, len(drawn)


def render(results: Results, output: Path, baseline: Results | None = None,
           rules: Rules | None = None) -> Rendered:
    """Build the view model, write its page to ``output`` (atomically), say what it holds."""
    started = time.monotonic()
    view = build(results, baseline, rules)
    page, n_charts = html(view)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, page)
    return Rendered(output, time.monotonic() - started, [s.id for s in view.sections], n_charts)


def link_latest(output: Path) -> Path:
    """Point ``<reports>/latest`` at ``<reports>/<run-id>`` (relative link, replaced atomically)."""
    run_dir = output.parent
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, latest)
    return latest
