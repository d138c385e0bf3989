"""The report's Anatomy section and the "blocked because" notes of the connectivity matrix,
computed from the saved ``anatomy`` table only (never from a live run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from linklab.report.aggregate import Leg, Results, datapath_label

MAIN_CHECKS = ("child-to-child", "child-to-remote", "host-to-child")
# the claim in Cilium's documentation (with ipvlan, no second stack traversal), per datapath:
# stack entries of one v4 packet (label, check, direction, count only the entries on the
# container's own host — its host and container namespaces)
SEED_COLUMNS = (("host → child", "host-to-child", "request", False),
                ("child → child", "child-to-child", "request", False),
                ("wire → child (on this host)", "child-to-remote", "reply", True))
ELSEWHERE = ("upstream", "remote")     # the LAN router and the remote host
COUNTS = ("queue", "xmit", "rx", "stack", "nf")


@dataclass
class Step:
    """One probe packet's counts, as shown in a datapath's table."""

    check: str
    family: str
    direction: str
    counts: dict[str, int]
    end: str
    stack_ns: str
    path: str
    nf_path: str


@dataclass
class Table:
    label: str
    scenario: str
    steps: list[Step]


@dataclass
class SeedRow:
    """host -> child and child -> child request of one datapath: how many stack entries."""

    label: str
    scenario: str
    cells: dict[str, str]          # column title -> "stack=N (ns,ns)" or how it ended


@dataclass
class AnatomyLeg:
    leg: Leg
    tables: list[Table] = field(default_factory=list)
    seed: list[SeedRow] = field(default_factory=list)
    blocked: list[tuple[str, str]] = field(default_factory=list)   # (cell id, why)


def _int(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def end_text(row: dict[str, Any]) -> str:
    """How one probe ended, in a few words."""
    end = row["end"]
    if end == "dropped":
        return f"dropped: {row['drop_reason']} in {row['drop_location']}"
    if end == "never delivered":
        last = row["path"].rsplit(" > ", 1)[-1] if row["path"] else ""
        if last:
            return f"never delivered (last seen on {last})"
        # past the last output hook, only an unresolved neighbour holds a packet without a
        # drop (it is freed with NEIGH_FAILED seconds later, outside the probe's window)
        hooks = f" (netfilter: {row['nf_path']})" if row["nf_path"] else ""
        return f"never delivered: never handed to a device, held for an unresolved neighbour{hooks}"
    return end


def blocked_because(rows: pd.DataFrame) -> dict[tuple[str, str, str], str]:
    """(scenario, check, family) -> where the round trip ended, for cells not delivered both
    ways."""
    out: dict[tuple[str, str, str], str] = {}
    for (sc, check, fam), part in rows.groupby(["scenario", "check", "family"], sort=False):
        by_dir = {r["direction"]: r for r in part.to_dict("records")}
        req, rep = by_dir.get("request"), by_dir.get("reply")
        if req is None:
            continue
        if req["delivered"] != "True":
            out[(sc, check, fam)] = f"request {end_text(req)}"
        elif rep is not None and rep["delivered"] != "True":
            out[(sc, check, fam)] = (f"request delivered (stack entries: {req['stack_ns']}); "
                                     f"reply {end_text(rep)}")
        elif "first attempt" in req["end"] + (rep["end"] if rep is not None else ""):
            out[(sc, check, fam)] = (f"a later round trip completed; request {req['end']}, "
                                     f"reply {rep['end'] if rep is not None else '—'}")
    return out


def legs(results: Results) -> list[AnatomyLeg]:
    """One entry per (kernel, virt) leg of the anatomy table."""
    if "anatomy" not in results.tables:
        return []
    out = []
    for leg in results.legs("anatomy"):
        frame = results.leg_rows("anatomy", leg).drop_duplicates(
            ["scenario", "check", "family", "direction"], keep="last")
        al = AnatomyLeg(leg)
        for sc, part in frame.groupby("scenario", sort=True):
            first = part.iloc[0]
            label = datapath_label(first["kind"], first["mode"], first["flag"])
            own = "-".join(p for p in (first["kind"], first["mode"], first["flag"]) if p)
            shown = "" if sc in (own, label.replace(" ", "-")) else sc
            steps = [Step(r["check"], r["family"], r["direction"],
                          {c: _int(r[c]) for c in COUNTS}, end_text(r), r["stack_ns"],
                          r["path"], r["nf_path"])
                     for r in part.to_dict("records") if r["check"] in MAIN_CHECKS]
            steps.sort(key=lambda s: (MAIN_CHECKS.index(s.check), s.family,
                                      s.direction != "request"))
            if steps:
                al.tables.append(Table(label, shown, steps))
            cells = {}
            for title, check, direction, local in SEED_COLUMNS:
                hit = part[(part["check"] == check) & (part["family"] == "v4")
                           & (part["direction"] == direction)]
                if hit.empty:
                    continue
                r = hit.iloc[0]
                where = [ns for ns in r["stack_ns"].split(",") if ns
                         and (not local or ns not in ELSEWHERE)]
                cells[title] = (f"stack={len(where)} ({','.join(where) or '—'})"
                                if r["delivered"] == "True" else end_text(r))
            if cells:
                al.seed.append(SeedRow(label, shown, cells))
        for (sc, check, fam), why in blocked_because(frame).items():
            al.blocked.append((f"{sc}-{fam}-{check}", why))
        out.append(al)
    return out


def annotate(matrices: list[Any], results: Results) -> None:
    """Add "blocked because" to the matrix cells whose anatomy was traced: the cell's title
    and its numbered note say where the round trip ended (tolerates another matrix shape)."""
    if "anatomy" not in results.tables or results.tables["anatomy"].empty:
        return
    for m in matrices:
        leg = getattr(m, "leg", None)
        if leg is None:
            continue
        why = blocked_because(results.leg_rows("anatomy", leg))
        numbered: dict[str, int] = {}
        for row in getattr(m, "rows", []):
            scenario = getattr(row, "scenario", "") or getattr(row, "label", "").replace(" ", "-")
            for (check, family), cell in zip(getattr(m, "columns", []), getattr(row, "cells", [])):
                text = why.get((scenario, check, family))
                if cell is None or text is None or getattr(cell, "cls", "") == "pass":
                    continue
                cell.title = f"{cell.title} — blocked because: {text}"
                if cell.note is not None and hasattr(m, "notes"):
                    note = f"{m.note_text(cell.note)} — blocked because: {text}"
                    if note not in numbered:
                        numbered[note] = len(m.notes) + 1
                        m.notes.append((numbered[note], "why", note))
                    cell.note = numbered[note]


def build(results: Results) -> dict[str, Any]:
    """The Anatomy section's view data (rendered by templates/sections/anatomy.html)."""
    return {"legs": legs(results), "counts": COUNTS,
            "seed_columns": [c[0] for c in SEED_COLUMNS]}
