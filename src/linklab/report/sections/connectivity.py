"""Section "connectivity": datapath x (check, family) per leg, each cell pointing at its note."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from linklab.report.aggregate import Leg, Results, datapath_label
from linklab.report.sections.common import Cell, Row

if TYPE_CHECKING:   # the view imports the sections to register them: no import circle
    from linklab.report.view import Inputs


# cell class -> short text; the legend in the template explains each
_OUTCOME_ORDER = {"failed": 0, "error": 0, "passed": 1, "skipped": 2}


@dataclass
class Matrix:
    leg: Leg
    columns: list[tuple[str, str]]
    rows: list[Row]
    notes: list[tuple[int, str, str]] = field(default_factory=list)  # (n, kind, text)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def check_groups(self) -> list[tuple[str, int]]:
        """(check, number of family columns) for the grouped header row."""
        groups: list[tuple[str, int]] = []
        for check, _family in self.columns:
            if groups and groups[-1][0] == check:
                groups[-1] = (check, groups[-1][1] + 1)
            else:
                groups.append((check, 1))
        return groups

    def note_text(self, n: int) -> str:
        return next(text for num, _kind, text in self.notes if num == n)


def _cell(row: pd.Series, notes: dict[tuple[str, str], int]) -> Cell:
    outcome, expected = row["outcome"], row["expected"] or "pass"
    observed = row["observed"] or "—"
    reason = row["reason"]
    title = f"{row['check']} {row['family']}: expected {expected}, observed {observed}"
    if row["detail"]:
        title += f" — {row['detail']}"
    if outcome == "skipped":
        cls, text, kind = "skipped", "skip", "skip"
    elif outcome == "passed" and expected == "pass":
        cls, text, kind = "pass", "✓", ""
    elif outcome == "passed":
        cls, text, kind = "isolated", "⊘", "why"
    else:
        cls, text, kind = "fail", "FAIL", "fail"
    note = None
    text_for_note = reason if kind != "fail" else (
        f"expected {expected}, observed {observed}"
        + (f": {row['detail']}" if row["detail"] else "")
        + (f" (documented: {reason})" if reason else ""))
    if kind and text_for_note:
        note = notes.setdefault((kind, text_for_note), len(notes) + 1)
    if reason:
        title += f" — {reason}"
    return Cell(cls, text, title, note)


_FAMILY_ORDER = {"v4": 0, "v6": 1, "l2": 2, "any": 3}


def _column_order(checks: list[str]):
    """Checks in the order the suite ran them, families v4, v6, l2, any within a check."""
    first = {c: i for i, c in reversed(list(enumerate(checks)))}
    return lambda col: (first[col[0]], _FAMILY_ORDER.get(col[1], 9), col[1])


def connectivity_matrices(results: Results) -> list[Matrix]:
    """datapath x (check, family) per leg; each blocked/skipped/failed cell points at a note."""
    out = []
    for leg in results.legs("connectivity"):
        frame = results.leg_rows("connectivity", leg)
        # a [pairs] truth table's pairs are drawn by the truth section, not as columns here
        frame = frame[frame["origin"] != "pairs"].copy()
        if frame.empty:
            continue
        frame["_rank"] = frame["outcome"].map(lambda o: _OUTCOME_ORDER.get(o, 0))
        columns = sorted(dict.fromkeys(zip(frame["check"], frame["family"])),
                         key=_column_order(list(frame["check"])))
        row_keys = list(dict.fromkeys(zip(frame["scenario"], frame["kind"], frame["mode"],
                                          frame["flag"])))
        notes: dict[tuple[str, str], int] = {}
        rows = []
        counts = {"pass": 0, "isolated": 0, "fail": 0, "skipped": 0}
        for scenario, kind, mode, flag in row_keys:
            part = frame[(frame["scenario"] == scenario) & (frame["kind"] == kind)
                         & (frame["mode"] == mode) & (frame["flag"] == flag)]
            cells: list[Cell | None] = []
            for check, family in columns:
                hit = part[(part["check"] == check) & (part["family"] == family)]
                if hit.empty:
                    cells.append(None)
                    continue
                cell = _cell(hit.sort_values("_rank").iloc[0], notes)
                counts[cell.cls] += 1
                cells.append(cell)
            label = datapath_label(kind, mode, flag)
            rows.append(Row(label, scenario if scenario.replace("-", " ") != label else "", cells))
        note_list = [(n, kind, text)
                     for (kind, text), n in sorted(notes.items(), key=lambda i: i[1])]
        out.append(Matrix(leg, columns, rows, note_list, counts))
    return out


def build(inputs: Inputs) -> list[Matrix]:
    """Section "connectivity": one matrix per leg (annotated from the anatomy, see Inputs)."""
    return inputs.matrices
