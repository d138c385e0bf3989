"""What several sections share: a table cell and row, a chart to draw, display units, times."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class ChartSpec:
    """One bar chart to draw: its rows and which columns make groups, series and values."""

    frame: pd.DataFrame
    group: str
    series: str
    value: str
    chart_id: str
    ylabel: str
    title: str
    scale: float = 1.0
    low: str | None = None
    high: str | None = None
    log: bool = False
    percent: bool = False


def needs_log(values: pd.Series) -> bool:
    """A log axis when the figures span more than ~30x (p99.9 next to p50)."""
    vals = values[values > 0]
    return bool(len(vals)) and vals.max() / vals.min() > 30


@dataclass
class Cell:
    cls: str
    text: str
    title: str
    note: int | None = None


@dataclass
class Row:
    label: str
    scenario: str  # shown under the label when it says more than the label
    cells: list[Cell | None]

    @property
    def skipped_note(self) -> int | None:
        """The one skip note when every measured cell of the row was skipped for it."""
        present = [c for c in self.cells if c is not None]
        notes = {c.note for c in present}
        if present and all(c.cls == "skipped" for c in present) and len(notes) == 1:
            return notes.pop()
        return None


def display_scale(unit: str, metric: str) -> tuple[float, str]:
    """Display scale and unit for throughput figures stored in bit/s."""
    if unit in ("bit/s", "bps", "bits/s") or metric.endswith("_bps"):
        return 1e-9, "Gbit/s"
    return 1.0, unit


def epoch(value: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 string (None if neither)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return pd.Timestamp(value).timestamp()
        except ValueError:
            return None
    return None
