"""History across runs: each key figure of every run in a results directory as a time series,
with the runs where the kernel or the machine changed marked (``linklab report --history``).

A single baseline comparison cannot see a slow drift (each night 2 % slower than the last);
a series can. Like the report, the page is built from saved results only: a view model
(:func:`build`) first, then the page (:func:`render`); inline SVG, no scripts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup

from linklab.report import charts
from linklab.report.aggregate import ReportError, Results, bench_summary, load_results
from linklab.report.render import environment
from linklab.report.sections.common import display_scale, epoch
from linklab.report.sections.summary import KEY_FIGURES
from linklab.results import atomic_write

MACHINE_FIELDS = (("kernel", "kernel"), ("cpu_model", "CPU"), ("cores", "cores"),
                  ("virt", "virtualisation"))


@dataclass
class RunPoint:
    """One run on the time axis."""

    run_id: str
    path: Path
    when: float                 # seconds since the epoch (meta 'started', else the dir's mtime)
    kernel: str
    machine: str                # CPU · cores · virtualisation
    commit: str
    figures: int
    change: str = ""            # what differs from the previous run ('' for none)


@dataclass
class Series:
    """One key figure of one datapath and family across runs."""

    label: str
    family: str
    points: list[tuple[int, float, float, float, int]]   # (run index, median, ci_low, ci_high, n)


@dataclass
class Metric:
    """One key figure (e.g. TCP throughput, 1 stream): a chart of all datapaths' series."""

    key: str
    title: str
    unit: str
    series: list[Series]
    chart_id: str


@dataclass
class HistoryView:
    directory: Path
    runs: list[RunPoint]
    metrics: list[Metric]
    skipped: list[str] = field(default_factory=list)   # runs that could not be read, and why
    generated: str = ""

    @property
    def changes(self) -> list[tuple[int, str]]:
        return [(i, r.change) for i, r in enumerate(self.runs) if r.change]


def _run_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and
                  ((p / "meta.json").exists() or any(p.glob("bench*.jsonl")) or
                   (p / "bench.parquet").exists()))


def _machine(meta: dict[str, Any]) -> str:
    return " · ".join(str(meta.get(k, "?")) for k in ("cpu_model", "cores", "virt"))


def build(directory: Path | str) -> HistoryView:
    """The history of every run under ``directory`` (oldest first); ReportError when fewer
    than two runs hold benchmark figures."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ReportError(f"--history {directory}: not a directory; pass the results directory "
                          "holding the runs (e.g. results/)")
    runs: list[tuple[RunPoint, Results]] = []
    skipped = []
    for path in _run_dirs(directory):
        try:
            res = load_results(path)
        except ReportError as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        if res.tables["bench"].empty:
            skipped.append(f"{path.name}: no benchmark rows")
            continue
        meta = res.meta
        when = epoch(meta.get("started"))
        point = RunPoint(res.run_id, path, when if when is not None else path.stat().st_mtime,
                         str(meta.get("kernel", "?")), _machine(meta),
                         str(meta.get("git_commit", ""))[:10], 0)
        runs.append((point, res))
    if len(runs) < 2:
        raise ReportError(f"--history {directory}: {len(runs)} run(s) with benchmark figures; "
                          "a history needs at least two" +
                          (f" (skipped: {'; '.join(skipped)})" if skipped else ""))
    runs.sort(key=lambda pr: pr[0].when)
    previous: dict[str, Any] | None = None
    for point, res in runs:
        if previous is not None:
            point.change = "; ".join(
                f"{name} {previous.get(key, '?')} → {res.meta.get(key, '?')}"
                for key, name in MACHINE_FIELDS if previous.get(key) != res.meta.get(key))
        previous = res.meta
    metrics = []
    summaries = []
    for point, res in runs:
        s = bench_summary(res.tables["bench"])
        host = str(res.meta.get("virt", "none")) or "none"
        s = s[s["virt"] == host]           # the run's own machine, never a VM leg
        point.figures = len(s)
        summaries.append(s)
    for k, (metric, direction, streams, title) in enumerate(KEY_FIGURES):
        series: dict[tuple[str, str], Series] = {}
        unit = ""
        for i, s in enumerate(summaries):
            part = s[(s["metric"] == metric) & (s["direction"] == direction)
                     & (s["streams"] == streams)]
            for r in part.to_dict("records"):
                scale, unit = display_scale(r["unit"], metric)
                key = (r["label"], r["family"])
                series.setdefault(key, Series(r["label"], r["family"], [])).points.append(
                    (i, r["median"] * scale, r["ci_low"] * scale, r["ci_high"] * scale,
                     int(r["n"])))
        if series:
            metrics.append(Metric(metric, title, unit, sorted(series.values(),
                                  key=lambda x: (x.family, x.label)), f"history-{k}"))
    return HistoryView(directory, [p for p, _ in runs], metrics, skipped,
                       time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))


# ---- formatting ------------------------------------------------------------------------------

def chart(view: HistoryView, metric: Metric) -> str:
    """A line per datapath and family across the runs, 95 % CI whiskers, dashed lines where
    the kernel or machine changed."""
    plt = charts.plt
    with plt.rc_context(charts._STYLE):
        fig, ax = plt.subplots(figsize=(max(6.5, 0.55 * len(view.runs) + 4), 3.6))
        spread = 0.3 / max(1, len(metric.series))      # side by side, whiskers apart
        for j, s in enumerate(metric.series):
            offset = (j - (len(metric.series) - 1) / 2) * spread
            xs = [p[0] + offset for p in s.points]
            ys = [p[1] for p in s.points]
            lo = [max(0.0, p[1] - p[2]) if math.isfinite(p[2]) else 0.0 for p in s.points]
            hi = [max(0.0, p[3] - p[1]) if math.isfinite(p[3]) else 0.0 for p in s.points]
            style = "-" if s.family == "v4" else "--"
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=f"o{style}", ms=3.5, lw=1.2, capsize=2,
                        color=charts.COLOURS[j % len(charts.COLOURS)],
                        label=f"{s.label} {s.family}")
        for i, text in view.changes:
            ax.axvline(i - 0.5, color="#c8553d", lw=1, ls=":")
            ax.annotate(text, (i - 0.5, 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, color="#8a1c0b", rotation=90, va="top", ha="right")
        ax.set_xticks(range(len(view.runs)),
                      [time.strftime("%m-%d %H:%M", time.gmtime(r.when)) for r in view.runs],
                      rotation=30, ha="right")
        ax.set_xlim(-0.5, len(view.runs) - 0.5)
        ax.set_ylabel(metric.unit)
        ax.set_title(f"{metric.title}: median per run with 95 % CI", loc="left", fontsize=10)
        ax.legend(fontsize=7, frameon=False, ncol=3, loc="upper left", bbox_to_anchor=(0, -0.28))
        return charts.to_svg(fig, metric.chart_id)


def render(view: HistoryView, output: Path) -> int:
    """Write the history page; returns the number of charts."""
    svgs = {m.chart_id: Markup(chart(view, m)) for m in view.metrics}
    page = environment().get_template("history.html").render(h=view, svgs=svgs, time=time)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, page)
    return len(svgs)


def frame(view: HistoryView) -> pd.DataFrame:
    """The series as one tidy table (run, figure, metric, datapath, family, median, CI, n)."""
    rows = [{"run_id": view.runs[i].run_id, "figure": m.title, "metric": m.key,
             "datapath": s.label,
             "family": s.family, "median": med, "ci_low": lo, "ci_high": hi, "n": n}
            for m in view.metrics for s in m.series for i, med, lo, hi, n in s.points]
    return pd.DataFrame(rows)
