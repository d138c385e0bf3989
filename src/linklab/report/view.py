"""The report's view model: every table, chart and verdict of a report, computed once from
saved results (and a baseline), before any HTML exists. ``render`` and ``charts`` only format
what :func:`build` returns, so verdicts and tables are unit-tested without a template.

Each section is one module (:mod:`linklab.report.sections`, plus :mod:`~linklab.report.which`
and :mod:`~linklab.report.anatomy`) whose builder is registered below, in page order. Adding a
section is adding its module, one :func:`register` line and one template
``templates/sections/<id>.html`` (it receives the builder's result as ``s.data`` and the whole
view as ``v``). A builder returns None when it has nothing to show; the section is then left
out of the page and the navigation. Other modules hook in the same way, e.g.::

    from linklab.report import view
    view.register(view.SectionDef("extra", "Extra", build_extra, after="summary"))
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from linklab.report import anatomy, cost, which
from linklab.report.aggregate import Results, Rules, bench_errors, bench_summary, with_efficiency
from linklab.report.sections import (
    baseline,
    bench,
    connectivity,
    dhcp,
    environment,
    summary,
    truth,
)
from linklab.report.sections.common import ChartSpec


@dataclass
class Inputs:
    """What every section builder may read; shared aggregates are computed once."""

    results: Results
    baseline: Results | None = None
    rules: Rules = field(default_factory=Rules)

    @functools.cached_property
    def wall(self) -> Results:
        """The results without instruction-clock rows: what the wall-clock sections read."""
        return cost.wall_clock(self.results)

    @functools.cached_property
    def bench_summary(self) -> pd.DataFrame:
        """One row per wall-clock figure (median, CI, n, CV, efficiency) of every leg."""
        return with_efficiency(bench_summary(self.wall.tables["bench"]))

    @functools.cached_property
    def benches(self) -> list[bench.BenchLeg]:
        return bench.bench_legs(self.wall)

    @functools.cached_property
    def matrices(self) -> list[connectivity.Matrix]:
        out = connectivity.connectivity_matrices(self.results)
        anatomy.annotate(out, self.results)     # "blocked because" from the traced paths
        return out

    @functools.cached_property
    def truth(self) -> list[truth.TruthLeg]:
        """The truth tables of the scenarios' own checks, per leg."""
        return truth.truth_legs(self.results)

    @functools.cached_property
    def dhcp(self) -> list[dhcp.DhcpTable]:
        return dhcp.dhcp_tables(self.results)

    @functools.cached_property
    def comparison(self) -> baseline.BaselineView | None:
        if self.baseline is None:
            return None
        return baseline.baseline_view(self.results, self.baseline, self.rules)


@dataclass(frozen=True)
class SectionDef:
    """A report section: its anchor id, its navigation title and its builder (returns the
    section's data, or None to leave the section out)."""

    id: str
    title: str
    build: Callable[[Inputs], Any]
    after: str | None = None     # place it after this section id (None: at the end)


@dataclass
class Section:
    id: str
    title: str
    data: Any

    @property
    def template(self) -> str:
        return f"sections/{self.id}.html"


SECTIONS: list[SectionDef] = []


def register(section: SectionDef) -> None:
    """Add (or replace) a section, after ``section.after`` or at the end."""
    SECTIONS[:] = [s for s in SECTIONS if s.id != section.id]
    ids = [s.id for s in SECTIONS]
    at = ids.index(section.after) + 1 if section.after in ids else len(SECTIONS)
    SECTIONS.insert(at, section)


for _section in (      # the built-in sections, in page order
        SectionDef("summary", "what this run says", summary.build),
        SectionDef("which", "which datapath?", lambda i: which.build(i.results)),
        SectionDef("cost", "cost per packet", lambda i: cost.build(i.results)),
        SectionDef("environment", "environment", environment.build),
        SectionDef("baseline", "baseline", baseline.build),
        SectionDef("connectivity", "connectivity", connectivity.build),
        SectionDef("truth", "truth tables", truth.build),
        SectionDef("dhcp", "DHCP client-id", dhcp.build),
        SectionDef("throughput", "throughput", bench.build),
        SectionDef("latency", "latency", bench.build),
        SectionDef("cpu", "CPU cost", bench.build),
        SectionDef("anatomy", "anatomy", lambda i: anatomy.build(i.results))):
    register(_section)


@dataclass
class View:
    """Everything the page shows, in page order."""

    results: Results
    baseline: Results | None
    rules: Rules
    problems: list[str]                 # notes of the loader
    errors: list[dict[str, Any]]        # bench error rows
    sections: list[Section]
    generated: str

    def section(self, section_id: str) -> Any:
        """The data of a section (None when absent)."""
        return next((s.data for s in self.sections if s.id == section_id), None)

    @property
    def charts(self) -> list[ChartSpec]:
        """Every chart of the page (each bench leg's, once)."""
        seen: dict[str, ChartSpec] = {}
        for s in self.sections:
            if s.id in ("throughput", "latency", "cpu"):
                for b in s.data:
                    for spec in b.charts.values():
                        seen.setdefault(spec.chart_id, spec)
        return list(seen.values())


def build(results: Results, baseline: Results | None = None, rules: Rules | None = None) -> View:
    """The view model of one report."""
    inputs = Inputs(results, baseline, rules or Rules())
    sections = []
    for d in SECTIONS:
        data = d.build(inputs)
        if data is not None:
            sections.append(Section(d.id, d.title, data))
    return View(results, baseline, inputs.rules, list(results.notes),
                bench_errors(results.tables["bench"]).to_dict("records"), sections,
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
