"""The report's view model: every table, chart and verdict of a report, computed once from
saved results (and a baseline), before any HTML exists. ``render`` and ``charts`` only format
what :func:`build` returns, so verdicts and tables are unit-tested without a template.

Adding a section is adding one builder to :data:`SECTIONS` and one template
``templates/sections/<id>.html`` (it receives the builder's result as ``s.data`` and the whole
view as ``v``). A builder returns None when it has nothing to show; the section is then left
out of the page and the navigation. Other modules hook in the same way, e.g.::

    from linklab.report import view
    view.register(view.SectionDef("which", "Which datapath?", which.build, after="summary"))
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from linklab.bench import compare as cmp
from linklab.report import anatomy, which
from linklab.report.aggregate import (
    LOOPBACK,
    Leg,
    Results,
    Rules,
    bench_errors,
    bench_summary,
    compare,
    datapath_label,
    latency_parts,
    machine_mismatch,
    with_efficiency,
)


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


# cell class -> short text; the legend in the template explains each
_OUTCOME_ORDER = {"failed": 0, "error": 0, "passed": 1, "skipped": 2}


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
        f"expected {expected}, observed {observed}" + (f": {row['detail']}" if row["detail"] else "")
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
        frame = results.leg_rows("connectivity", leg).copy()
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
        note_list = [(n, kind, text) for (kind, text), n in sorted(notes.items(), key=lambda i: i[1])]
        out.append(Matrix(leg, columns, rows, note_list, counts))
    return out


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
            key = (r["setup"], r["scenario"], r["client"], r["client_id"])
            by_row.setdefault(key, {})[r["server_option"]] = cell
        rows = [Row(f"{setup} · {client}", f"{scenario} · ids {ids or '—'}",
                    [cells.get(srv) for srv in servers])
                for (setup, scenario, client, ids), cells in by_row.items()]
        note_list = [(n, kind, text) for (kind, text), n in sorted(notes.items(), key=lambda i: i[1])]
        out.append(DhcpTable(leg, servers, rows, note_list,
                             [r for r in records if r["outcome"] != "skipped"], counts))
    return out


def _scale(unit: str, metric: str) -> tuple[float, str]:
    """Display scale and unit for throughput figures stored in bit/s."""
    if unit in ("bit/s", "bps", "bits/s") or metric.endswith("_bps"):
        return 1e-9, "Gbit/s"
    return 1.0, unit


def _latency_kind(metrics: pd.Series) -> str:
    """'one-way (RTT/2)' or 'round-trip', as the metric names say."""
    names = set(metrics)
    if all("oneway" in m for m in names):
        return "one-way (RTT/2)"
    if all("rtt" in m.split("_") for m in names):
        return "round-trip"
    return ""


def _series(row: pd.Series, families: int) -> str:
    streams = f"{row['streams']} stream{'s' if row['streams'] not in ('1', '') else ''}"
    proto = "UDP " if row["metric"].startswith("udp_") else ""
    name = f"{proto}{row['direction'] or '?'} · {streams}"
    return f"{name} · {row['family']}" if families > 1 else name


@dataclass
class BenchLeg:
    leg: Leg
    charts: dict[str, ChartSpec]
    throughput: list[dict[str, Any]]
    latency: list[dict[str, Any]]
    percentiles: list[str]
    cpu: list[dict[str, Any]]
    other: list[dict[str, Any]]
    throughput_unit: str
    missing_loopback: bool


def bench_legs(results: Results) -> list[BenchLeg]:
    out = []
    summary = with_efficiency(bench_summary(results.tables["bench"]))
    for leg in results.legs("bench"):
        s = summary[(summary["kernel"] == leg.kernel) & (summary["virt"] == leg.virt)]
        if s.empty:
            continue
        made: dict[str, ChartSpec] = {}
        slug = leg.slug
        thr = s[s["section"] == "throughput"].copy()
        unit = "bit/s"
        if not thr.empty:
            scale, unit = _scale(thr["unit"].iloc[0], thr["metric"].iloc[0])
            fams = thr["family"].nunique()
            thr["series"] = [_series(r, fams) for _, r in thr.iterrows()]
            thr["shown"] = thr["median"] * scale
            thr["shown_low"] = thr["ci_low"] * scale
            thr["shown_high"] = thr["ci_high"] * scale
            for metric, part in thr.groupby("metric", sort=False):
                suffix = "" if metric == "throughput_bps" else f"-{metric}"
                made[f"throughput{suffix}"] = ChartSpec(
                    part, group="label", series="series", value="median", low="ci_low",
                    high="ci_high", scale=scale, chart_id=f"chart-throughput{suffix}-{slug}",
                    ylabel=unit, title=f"{metric}: median with 95 % CI")
            eff = thr[(thr["datapath"] != LOOPBACK) & thr["efficiency"].notna()].copy()
            if not eff.empty:
                eff["pct"] = eff["efficiency"] * 100
                made["efficiency"] = ChartSpec(
                    eff, group="label", series="series", value="pct",
                    chart_id=f"chart-efficiency-{slug}", ylabel="% of loopback",
                    title="throughput efficiency = datapath / loopback (100 % = ceiling)",
                    percent=True)
        lat = s[s["section"] == "latency"].copy()
        lat_rows: list[dict[str, Any]] = []
        percentiles: list[str] = []
        if not lat.empty:
            parts = [latency_parts(m, d) for m, d in zip(lat["metric"], lat["direction"])]
            lat["proto"] = [p[0] or "?" for p in parts]
            if lat["family"].nunique() > 1:     # ICMP over v4 and v6: one chart each
                lat["proto"] = [f"{p}-{f}" for p, f in zip(lat["proto"], lat["family"])]
            lat["pct"] = [p[1] for p in parts]
            lat["_order"] = lat["pct"].map(lambda p: float(p[1:]) if p[1:].replace(".", "").isdigit() else 0)
            lat = lat.sort_values(["proto", "_order"], kind="stable")
            for proto, part in lat.groupby("proto", sort=True):
                made[f"latency-{proto}"] = ChartSpec(
                    part, group="label", series="pct", value="median", low="ci_low",
                    high="ci_high", chart_id=f"chart-latency-{proto}-{slug}",
                    ylabel=f"latency ({part['unit'].iloc[0]})", log=needs_log(part["median"]),
                    title=f"{proto.replace('-', ' ').upper()} {_latency_kind(part['metric'])} "
                          f"latency ({'ping' if proto.startswith('icmp') else 'sockperf ping-pong'}"
                          "): median with 95 % CI")
            for (label, proto), part in lat.groupby(["label", "proto"], sort=False):
                lat_rows.append({"label": label, "proto": proto, "unit": part["unit"].iloc[0],
                                 "n": int(part["n"].min()),
                                 "figures": {r["pct"]: r for r in part.to_dict("records")}})
            percentiles = list(dict.fromkeys(lat["pct"]))
        cpu = s[s["section"] == "cpu"].copy()
        if not cpu.empty:
            fams = cpu["family"].nunique()
            cpu["series"] = [_series(r, fams) for _, r in cpu.iterrows()]
            tcp_cpu = cpu[~cpu["metric"].str.startswith("udp_")]
            made["cpu"] = ChartSpec(
                tcp_cpu if not tcp_cpu.empty else cpu, group="label", series="series", value="median", low="ci_low", high="ci_high",
                chart_id=f"chart-cpu-{slug}", ylabel=f"CPU ({cpu['unit'].iloc[0]})",
                title="TCP: busy CPU-seconds per transferred gigabit (lower is cheaper)")
        other = s[s["section"] == "other"].copy()
        scaled = [_scale(u, m) for u, m in zip(other["unit"], other["metric"])]
        for col in ("median", "ci_low", "ci_high"):
            other[f"shown_{col}"] = other[col] * [f for f, _ in scaled]
        other["shown_unit"] = [u for _, u in scaled]
        out.append(BenchLeg(
            leg=leg, charts=made, throughput=thr.to_dict("records"), latency=lat_rows,
            percentiles=percentiles, cpu=cpu.to_dict("records"), other=other.to_dict("records"), throughput_unit=unit,
            missing_loopback=not thr.empty and LOOPBACK not in set(thr["datapath"])))
    return out




# ---------------------------------------------------------------------------------------------
# the environment and the baseline


def _env(meta: dict[str, Any]) -> list[tuple[str, str]]:
    tools = meta.get("tools") or {}
    tool_text = ", ".join(f"{k} {v}" for k, v in sorted(tools.items())) if isinstance(tools, dict) else str(tools)
    rows = [("kernel release", meta.get("kernel")), ("CPU", meta.get("cpu_model")),
            ("cores", meta.get("cores")), ("virtualisation", meta.get("virt")),
            ("tool versions", tool_text or None), ("git commit", meta.get("git_commit")),
            ("started", _when(meta.get("started"))), ("ended", _when(meta.get("ended"))),
            ("duration", _duration(meta.get("started"), meta.get("ended")))]
    return [(k, "unknown (not recorded)" if v in (None, "") else str(v)) for k, v in rows]


def _epoch(value: Any) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 string (None if neither)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        try:
            return pd.Timestamp(value).timestamp()
        except ValueError:
            return None
    return None


def _when(value: Any) -> Any:
    secs = _epoch(value)
    if secs is None:
        return value
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(secs))


def _duration(start: Any, end: Any) -> str | None:
    a, b = _epoch(start), _epoch(end)
    if a is None or b is None:
        return None
    return f"{b - a:.0f} s"




@dataclass
class BaselineView:
    """This run against a baseline: every shared figure with its verdict, worst first."""

    run_id: str
    rows: list[dict[str, Any]]          # regressed, improved, cannot, same (in that order)
    mismatch: list[str]
    rules: Rules

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.rows if r["verdict"] == verdict)

    def having(self, *verdicts: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["verdict"] in verdicts]


_VERDICT_ORDER = {"regressed": 0, "improved": 1, "cannot": 2, "same": 3}


def baseline_view(results: Results, baseline: Results, rules: Rules) -> BaselineView:
    comparison = compare(results, baseline, rules)
    shown = [_scale(u, m) for u, m in zip(comparison["unit"], comparison["metric"])]
    factor = [f for f, _ in shown]
    for col in ("median", "ci_low", "ci_high", "base_median", "base_ci_low", "base_ci_high"):
        comparison[col] = comparison[col] * factor
    comparison["unit"] = [u for _, u in shown]
    rows = comparison.assign(_o=comparison["verdict"].map(_VERDICT_ORDER)).sort_values(
        ["_o", "role", "section", "label"], kind="stable").to_dict("records")
    return BaselineView(baseline.run_id, rows, machine_mismatch(results.meta, baseline.meta),
                        rules)


# ---------------------------------------------------------------------------------------------
# the summary on top: "What this run says"

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
    bench = inputs.results.tables["bench"]
    ok = bench[(bench["error"] == "") & bench["value"].notna()]
    summary = inputs.bench_summary
    if ok.empty or summary.empty:
        return []
    values = _figure_values(ok)
    out = []
    for leg in inputs.results.legs("bench"):
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
                scale, unit = _scale(recs[0]["unit"], metric)
                rows = []
                for i, r in enumerate(recs):
                    more = i + 1 < len(recs)
                    rows.append(Ranked(i + 1, r["label"], r["median"] * scale, unit, int(r["n"]),
                                       int(r["disturbed"]), r["datapath"] in (LOOPBACK, "veth-pair"),
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


def summary(inputs: Inputs) -> Summary:
    bench = inputs.results.tables["bench"]
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
        cells=cell_counts(inputs.matrices, inputs.dhcp),
        rankings=rankings(inputs),
        regressions=comparison.having("regressed") if comparison else None,
        baseline=comparison, measurements=len(measured),
        disturbed=int((measured["disturbed"] == 1).sum()), design=design,
        load_recorded=bool(measured["disturbed"].notna().any()))


# ---------------------------------------------------------------------------------------------
# sections


@dataclass
class Inputs:
    """What every section builder may read; shared aggregates are computed once."""

    results: Results
    baseline: Results | None = None
    rules: Rules = field(default_factory=Rules)

    @functools.cached_property
    def bench_summary(self) -> pd.DataFrame:
        """One row per figure (median, CI, n, CV, efficiency) of every leg."""
        return with_efficiency(bench_summary(self.results.tables["bench"]))

    @functools.cached_property
    def benches(self) -> list[BenchLeg]:
        return bench_legs(self.results)

    @functools.cached_property
    def matrices(self) -> list[Matrix]:
        out = connectivity_matrices(self.results)
        anatomy.annotate(out, self.results)     # "blocked because" from the traced paths
        return out

    @functools.cached_property
    def dhcp(self) -> list[DhcpTable]:
        return dhcp_tables(self.results)

    @functools.cached_property
    def comparison(self) -> BaselineView | None:
        if self.baseline is None:
            return None
        return baseline_view(self.results, self.baseline, self.rules)


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


SECTIONS: list[SectionDef] = [
    SectionDef("summary", "what this run says", summary),
    SectionDef("which", "which datapath?", lambda i: which.build(i.results)),
    SectionDef("environment", "environment", lambda i: _env(i.results.meta)),
    SectionDef("baseline", "baseline", lambda i: i.comparison),
    SectionDef("connectivity", "connectivity", lambda i: i.matrices),
    SectionDef("dhcp", "DHCP client-id", lambda i: i.dhcp),
    SectionDef("throughput", "throughput", lambda i: i.benches),
    SectionDef("latency", "latency", lambda i: i.benches),
    SectionDef("cpu", "CPU cost", lambda i: i.benches),
    SectionDef("anatomy", "anatomy", lambda i: anatomy.build(i.results)),
]


def register(section: SectionDef) -> None:
    """Add (or replace) a section, after ``section.after`` or at the end."""
    SECTIONS[:] = [s for s in SECTIONS if s.id != section.id]
    ids = [s.id for s in SECTIONS]
    at = ids.index(section.after) + 1 if section.after in ids else len(SECTIONS)
    SECTIONS.insert(at, section)


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
