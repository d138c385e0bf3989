"""Section "truth": the scenario's own checks as truth tables, the way Cyclonus prints them —
per scenario, family and probe (icmp, tcp/80, ...), source x destination, each cell what was
observed, every mismatch with the expectation marked. [[check]] flows and [pairs] pairs are
the connectivity rows that name a source and a destination (``src``, ``dst``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from linklab.report.aggregate import Leg, Results

if TYPE_CHECKING:   # the view imports the sections to register them: no import circle
    from linklab.report.view import Inputs

# a table with more sources than this shows only its rows with a mismatch (250 containers
# make 63 000 cells per probe; the page stays readable and every mismatch is still there)
MAX_ROWS = 64
ROLES_LAST = ("upstream", "remote")   # destinations after the containers and hosts


@dataclass(frozen=True)
class TruthCell:
    cls: str          # pass | isolated | fail | skipped
    text: str         # ✓ reached, ⊘ blocked, ✗ mismatch, - skipped
    title: str


@dataclass
class TruthTable:
    scenario: str
    family: str
    probe: str        # icmp, tcp/80, udp/53
    sources: list[str]
    destinations: list[str]
    cells: dict[tuple[str, str], TruthCell]
    mismatches: int
    hidden: int = 0   # rows all as expected, left out of a large table
    counts: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)   # "scenario family probe src → dst"

    @property
    def id(self) -> str:
        return f"truth-{self.scenario}-{self.family}-{self.probe.replace('/', '-')}"

    def cell(self, src: str, dst: str) -> TruthCell | None:
        return self.cells.get((src, dst))


@dataclass
class TruthLeg:
    leg: Leg
    tables: list[TruthTable]


def _probe(row: Mapping[str, Any]) -> str:
    return row["proto"] if row["proto"] == "icmp" or not row["port"] else \
        f"{row['proto']}/{row['port']}"


def _cell(row: Mapping[str, Any]) -> TruthCell:
    expected, observed = row["expected"], row["observed"] or "—"
    title = f"{row['src']} → {row['dst']} {_probe(row)} {row['family']}: expected {expected}, " \
            f"observed {observed}"
    if row["detail"]:
        title += f" — {row['detail']}"
    if row["reason"]:
        title += f" — {row['reason']}"
    if row["outcome"] == "skipped":
        return TruthCell("skipped", "-", title)
    if row["outcome"] == "failed" or (observed != expected and expected in ("pass", "blocked")):
        return TruthCell("fail", "✗", title)
    return TruthCell("pass", "✓", title) if observed == "pass" else \
        TruthCell("isolated", "⊘", title)


def _natural(name: str) -> list[object]:
    """c2 before c10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _order(names: list[str], roles: set[str]) -> list[str]:
    """Sources (containers) by name, then the other destinations (hosts), then upstream and
    remote."""
    return sorted(dict.fromkeys(names), key=lambda n: (
        n in ROLES_LAST, n in roles, ROLES_LAST.index(n) if n in ROLES_LAST else 0,
        _natural(n)))


def truth_tables(frame: pd.DataFrame) -> list[TruthTable]:
    """One table per (scenario, family, probe) of the rows that name a flow."""
    flows = frame[(frame["src"] != "") & (frame["dst"] != "")].copy()
    if flows.empty:
        return []
    flows["_probe"] = flows["proto"].where(
        (flows["proto"] == "icmp") | (flows["port"] == ""), flows["proto"] + "/" + flows["port"])
    # a [pairs] row wins over the [[check]] row of the same pair (same observation)
    flows["_rank"] = (flows["origin"] != "pairs").astype(int)
    out = []
    for (scenario, family, probe), part in flows.groupby(
            ["scenario", "family", "_probe"], sort=False):
        part = part.sort_values("_rank", kind="stable")
        sources = sorted(dict.fromkeys(part["src"]), key=_natural)
        not_src = set(part["dst"]) - set(sources)
        destinations = _order([*sources, *part["dst"]], not_src)
        cells: dict[tuple[str, str], TruthCell] = {}
        for row in part.to_dict("records"):      # 63 000 pairs a table: no iterrows
            key = (row["src"], row["dst"])
            if key not in cells:
                cells[key] = _cell(row)
        counts = {k: sum(c.cls == k for c in cells.values())
                  for k in ("pass", "isolated", "fail", "skipped")}
        table = TruthTable(scenario, family, probe, sources, destinations, cells,
                           counts["fail"], counts=counts)
        table.failed = [f"{scenario} {family} {probe} {s} → {d}"
                        for (s, d), c in cells.items() if c.cls == "fail"]
        if len(sources) > MAX_ROWS:
            failing = {s for (s, _d), c in cells.items() if c.cls == "fail"}
            table.hidden = len(sources) - len(failing)
            table.sources = [s for s in sources if s in failing]
        out.append(table)
    return out


def truth_legs(results: Results) -> list[TruthLeg]:
    out = []
    for leg in results.legs("connectivity"):
        tables = truth_tables(results.leg_rows("connectivity", leg))
        if tables:
            out.append(TruthLeg(leg, tables))
    return out


def build(inputs: Inputs) -> list[TruthLeg] | None:
    """Section "truth": None (left out) when no scenario declared its own checks."""
    return inputs.truth or None
