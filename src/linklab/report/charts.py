"""Charts drawn with matplotlib (Agg) and returned as inline SVG text (no files, no fonts
fetched: text stays text and the browser uses a local sans-serif)."""

from __future__ import annotations

import io
import math
import re
import textwrap

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd

COLOURS = ("#3b6ea8", "#9cc3e6", "#c8553d", "#f2a490", "#5b8c5a", "#b4d6a4", "#7a5195", "#c9b3dc")
_STYLE = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.axis": "y",
    "grid.color": "#dddddd",
    "axes.axisbelow": True,
    # labels are datapath names and units from saved rows, not TeX: a '$' in one is a
    # character (mathtext made `linklab report` fail on an unbalanced '$x^$')
    "text.parse_math": False,
}


def to_svg(fig: plt.Figure, chart_id: str) -> str:
    """The figure as an ``<svg>`` element to paste into HTML (no XML prolog, no metadata)."""
    buf = io.StringIO()
    with plt.rc_context({"svg.hashsalt": chart_id}):
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    # ids must be unique in the page: prefix matplotlib's (axes_1, clip paths ...) per chart
    svg = re.sub(r'\bid="([^"]+)"', rf'id="{chart_id}-\1"', svg)
    svg = re.sub(r'url\(#([^)]+)\)', rf'url(#{chart_id}-\1)', svg)
    svg = re.sub(r'href="#([^"]+)"', rf'href="#{chart_id}-\1"', svg)
    # the browser scales it to the column; the viewBox keeps the aspect ratio
    svg = re.sub(r'<svg([^>]*?) width="[^"]+" height="[^"]+"',
                 rf'<svg\1 id="{chart_id}" class="chart" role="img"', svg, count=1)
    return svg


def grouped_bars(frame: pd.DataFrame, *, group: str, series: str, value: str, chart_id: str,
                 ylabel: str, title: str, scale: float = 1.0, low: str | None = None,
                 high: str | None = None, log: bool = False, percent: bool = False) -> str:
    """Bars for each ``group`` (x) and ``series`` (colour), error bars from ``low``/``high``."""
    groups = list(dict.fromkeys(frame[group]))
    names = list(dict.fromkeys(frame[series]))
    width = 0.8 / max(1, len(names))
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(groups) + 2.5), 3.2))
        for i, name in enumerate(names):
            part = frame[frame[series] == name].set_index(group)
            xs, ys, err_lo, err_hi = [], [], [], []
            for x, g in enumerate(groups):
                if g not in part.index:
                    continue
                row = part.loc[g]
                row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
                y = row[value] * scale
                xs.append(x + (i - (len(names) - 1) / 2) * width)
                ys.append(y)
                if low and high and not math.isnan(row[low]):
                    err_lo.append(max(0.0, y - row[low] * scale))
                    err_hi.append(max(0.0, row[high] * scale - y))
                else:
                    err_lo.append(0.0)
                    err_hi.append(0.0)
            yerr = [err_lo, err_hi] if low and high else None
            ax.bar(xs, ys, width=width * 0.95, color=COLOURS[i % len(COLOURS)], label=str(name),
                   yerr=yerr, capsize=2.5, error_kw={"elinewidth": 0.9, "ecolor": "#333333"})
        wrap = 12 if len(groups) > 4 else 24
        ax.set_xticks(range(len(groups)), [textwrap.fill(str(g), wrap) for g in groups])
        ax.set_ylabel(ylabel)
        ax.set_title(title, loc="left", fontsize=10)
        if log:
            ax.set_yscale("log")
        if percent:
            ax.axhline(100, color="#888888", lw=0.8, ls="--")
        ax.legend(fontsize=8, frameon=False, ncol=min(4, len(names)), loc="upper left",
                  bbox_to_anchor=(0, -0.12))
        return to_svg(fig, chart_id)


def needs_log(values: pd.Series) -> bool:
    """A log axis when the figures span more than ~30x (p99.9 next to p50)."""
    vals = values[values > 0]
    return bool(len(vals)) and vals.max() / vals.min() > 30
