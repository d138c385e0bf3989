"""Section "dhcp": the DHCP client-identifier cells, setup x server option per leg."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from linklab.report.aggregate import Leg, Results
from linklab.report.sections.common import Cell, Row

if TYPE_CHECKING:   # the view imports the sections to register them: no import circle
    from linklab.report.view import Inputs


@dataclass
class DhcpTable:
    """DHCP cells of one leg: (setup, scenario, client, client ids) x server option."""

    leg: Leg
    servers: list[str]
    rows: list[Row]
    notes: list[tuple[int, str, str]]
    records: list[dict[str, Any]]  # every measured (not skipped) cell, for the detail table
    counts: dict[str, int]


def _dhcp_cell(row: dict[str, Any], notes: dict[tuple[str, str], int]) -> Cell:
    title = f"expected {row['expected']}, observed {row['observed'] or '—'}"
    if row["detail"]:
        title += f" — {row['detail']}"
    if row["outcome"] == "skipped":
        reason = row["detail"] or row["observed"] or "skipped"
        return Cell("skipped", "skip", title, notes.setdefault(("skip", reason), len(notes) + 1))
    if row["outcome"] == "passed":
        return Cell("pass", row["observed"] or "✓", title)
    text = f"expected {row['expected']}, observed {row['observed'] or 'nothing'}"
    return Cell("fail", row["observed"] or "FAIL", title,
                notes.setdefault(("fail", text), len(notes) + 1))


def dhcp_tables(results: Results) -> list[DhcpTable]:
    out = []
    for leg in results.legs("dhcp"):
        frame = results.leg_rows("dhcp", leg).sort_values(
            ["setup", "scenario", "client"], kind="stable")
        records = frame.to_dict("records")
        servers = list(dict.fromkeys(frame["server_option"]))
        notes: dict[tuple[str, str], int] = {}
        counts = {"pass": 0, "fail": 0, "skipped": 0}
        by_row: dict[tuple[str, str, str, str], dict[str, Cell]] = {}
        for r in records:
            cell = _dhcp_cell(r, notes)
            counts[cell.cls] += 1
            key = (r["setup"], r["scenario"], r["client"], r["client_id"],
                   r.get("clients_kernel") or "")
            by_row.setdefault(key, {})[r["server_option"]] = cell
        rows = [Row(f"{setup} · {client}", f"{scenario} · ids {ids or '—'}"
                    + (f" · clients on another machine ({other})" if other else ""),
                    [cells.get(srv) for srv in servers])
                for (setup, scenario, client, ids, other), cells in by_row.items()]
        note_list = [(n, kind, text)
                     for (kind, text), n in sorted(notes.items(), key=lambda i: i[1])]
        out.append(DhcpTable(leg, servers, rows, note_list,
                             [r for r in records if r["outcome"] != "skipped"], counts))
    return out


def build(inputs: Inputs) -> list[DhcpTable]:
    """Section "dhcp": the DHCP client-id cells of every leg."""
    return inputs.dhcp
