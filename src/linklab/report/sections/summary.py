"""Section "summary", on top ("what this run says"): the verdicts a reader needs first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from linklab.bench import compare as cmp
from linklab.report.aggregate import LOOPBACK, Leg
from linklab.report.sections import truth
from linklab.report.sections.baseline import BaselineView
from linklab.report.sections.common import display_scale
from linklab.report.sections.connectivity import Matrix
from linklab.report.sections.dhcp import DhcpTable

if TYPE_CHECKING:   # the view imports the sections to register them: no import circle
    from linklab.report.view import Inputs


# (metric, direction, streams, what it is): the figures a datapath is ranked on
KEY_FIGURES: tuple[tuple[str, str, str, str], ...] = (
    ("throughput_bps", "forward", "1", "TCP throughput, 1 stream"),
    ("throughput_bps", "forward", "4", "TCP throughput, 4 streams"),
    ("tcp_oneway_latency_p50_us", "pingpong", "1", "TCP latency p50 (one-way)"),
    ("icmp_rtt_latency_p50_us", "pingpong", "1", "ICMP echo round trip p50"),
)


@dataclass
class Ranked:
    """One datapath's place in a ranking and its verdict against the next one down."""

    place: int
    label: str
    median: float
    unit: str
    n: int
    disturbed: int
    reference: bool                 # loopback / veth-pair: a yardstick, not a candidate
    against: str | None = None      # the next datapath down
    verdict: Any = None             # linklab.compare.Verdict of this one against that one


@dataclass
class Ranking:
    leg: Leg
    family: str
    title: str
    higher_is_better: bool
    rows: list[Ranked]


@dataclass
class CellCount:
    leg: Leg
    table: str                     # connectivity | dhcp
    as_documented: int
    failed: int
    skipped: int
    failures: list[str]


@dataclass
class Summary:
    """The verdicts a reader needs first; every number here is also in a section below."""

    cells: list[CellCount]
    rankings: list[Ranking]
    regressions: list[dict[str, Any]] | None      # None: no baseline given
    baseline: BaselineView | None
    measurements: int
    disturbed: int
    design: dict[str, Any]
    load_recorded: bool = True      # runs before the disturbance columns have none


def _figure_values(ok: pd.DataFrame) -> dict[tuple[str, ...], list[float]]:
    keys = ["kernel", "virt", "family", "metric", "direction", "streams", "datapath", "mode",
            "flag"]
    return {tuple(str(x) for x in k): g["value"].tolist()
            for k, g in ok.groupby(keys, sort=False)}


def rankings(inputs: Inputs) -> list[Ranking]:
    """Per leg, family and key figure: datapaths best first, each judged against the next
    (Holm over the comparisons of one ranking)."""
    bench = inputs.wall.tables["bench"]
    ok = bench[(bench["error"] == "") & bench["value"].notna()]
    summary = inputs.bench_summary
    if ok.empty or summary.empty:
        return []
    values = _figure_values(ok)
    out = []
    for leg in inputs.wall.legs("bench"):
        s = summary[(summary["kernel"] == leg.kernel) & (summary["virt"] == leg.virt)]
        for family in sorted(set(s["family"])):
            for metric, direction, streams, title in KEY_FIGURES:
                part = s[(s["family"] == family) & (s["metric"] == metric)
                         & (s["direction"] == direction) & (s["streams"] == streams)]
                if len(part) < 2:
                    continue
                up = cmp.higher_is_better(metric)
                part = part.sort_values("median", ascending=not up, kind="stable")
                recs = part.to_dict("records")
                vals = [values[(leg.kernel, leg.virt, family, metric, direction, streams,
                                r["datapath"], r["mode"], r["flag"])] for r in recs]
                verdicts = cmp.judge([(vals[i], vals[i + 1], metric)
                                      for i in range(len(recs) - 1)])
                scale, unit = display_scale(recs[0]["unit"], metric)
                rows = []
                for i, r in enumerate(recs):
                    more = i + 1 < len(recs)
                    rows.append(Ranked(i + 1, r["label"], r["median"] * scale, unit, int(r["n"]),
                                       int(r["disturbed"]),
                                       r["datapath"] in (LOOPBACK, "veth-pair"),
                                       recs[i + 1]["label"] if more else None,
                                       verdicts[i] if more else None))
                out.append(Ranking(leg, family, title, up, rows))
    return out


def cell_counts(matrices: list[Matrix], dhcp: list[DhcpTable]) -> list[CellCount]:
    out = []
    for m in matrices:
        failures = [f"{row.label} {check} {family}" for row in m.rows
                    for (check, family), c in zip(m.columns, row.cells)
                    if c is not None and c.cls == "fail"]
        out.append(CellCount(m.leg, "connectivity", m.counts.get("pass", 0)
                             + m.counts.get("isolated", 0), m.counts.get("fail", 0),
                             m.counts.get("skipped", 0), failures))
    for t in dhcp:
        failures = [f"{row.label} · {srv}" for row in t.rows
                    for srv, c in zip(t.servers, row.cells) if c is not None and c.cls == "fail"]
        out.append(CellCount(t.leg, "DHCP client-id", t.counts.get("pass", 0),
                             t.counts.get("fail", 0), t.counts.get("skipped", 0), failures))
    return out


def truth_counts(legs: list[truth.TruthLeg]) -> list[CellCount]:
    """The pairs of the truth tables (the scenarios' own checks), per leg."""
    out = []
    for t in legs:
        count = {k: sum(tt.counts.get(k, 0) for tt in t.tables)
                 for k in ("pass", "isolated", "fail", "skipped")}
        failed = [f for tt in t.tables for f in tt.failed]
        out.append(CellCount(t.leg, "own checks (truth tables)",
                             count["pass"] + count["isolated"], count["fail"], count["skipped"],
                             failed[:20] + ([f"… and {len(failed) - 20} more"]
                                            if len(failed) > 20 else [])))
    return out


def build(inputs: Inputs) -> Summary:
    """Section "summary" ("what this run says"): cell counts, rankings, regressions."""
    bench = inputs.wall.tables["bench"]
    ok = bench[(bench["error"] == "") & bench["value"].notna()]
    proto = ok["metric"].str.extract(r"^(udp|tcp|icmp)_", expand=False).fillna("tcp")
    measured = ok.assign(_proto=proto).drop_duplicates(
        ["kernel", "virt", "datapath", "mode", "flag", "family", "direction", "streams", "tool",
         "_proto", "repetition"])
    meta_bench = inputs.results.meta.get("bench") or {}
    design = {"reps": meta_bench.get("reps"), "blocks": len(meta_bench.get("blocks") or []),
              "layout": meta_bench.get("layout"), "seed": meta_bench.get("order_seed")}
    comparison = inputs.comparison
    return Summary(
        cells=cell_counts(inputs.matrices, inputs.dhcp) + truth_counts(inputs.truth),
        rankings=rankings(inputs),
        regressions=comparison.having("regressed") if comparison else None,
        baseline=comparison, measurements=len(measured),
        disturbed=int((measured["disturbed"] == 1).sum()), design=design,
        load_recorded=bool(measured["disturbed"].notna().any()))
