"""Lay the aggregated results out as one self-contained HTML page (Jinja2 template)."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from linklab.report import anatomy, charts
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
from linklab.results import atomic_write

TEMPLATES = Path(__file__).with_name("templates")

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
    charts: dict[str, Markup]
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
        made: dict[str, Markup] = {}
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
                made[f"throughput{suffix}"] = Markup(charts.grouped_bars(
                    part, group="label", series="series", value="median", low="ci_low",
                    high="ci_high", scale=scale, chart_id=f"chart-throughput{suffix}-{slug}",
                    ylabel=unit, title=f"{metric}: median with 95 % CI"))
            eff = thr[(thr["datapath"] != LOOPBACK) & thr["efficiency"].notna()].copy()
            if not eff.empty:
                eff["pct"] = eff["efficiency"] * 100
                made["efficiency"] = Markup(charts.grouped_bars(
                    eff, group="label", series="series", value="pct",
                    chart_id=f"chart-efficiency-{slug}", ylabel="% of loopback",
                    title="throughput efficiency = datapath / loopback (100 % = ceiling)",
                    percent=True))
        lat = s[s["section"] == "latency"].copy()
        lat_rows: list[dict[str, Any]] = []
        percentiles: list[str] = []
        if not lat.empty:
            parts = [latency_parts(m, d) for m, d in zip(lat["metric"], lat["direction"])]
            lat["proto"] = [p[0] or "?" for p in parts]
            lat["pct"] = [p[1] for p in parts]
            lat["_order"] = lat["pct"].map(lambda p: float(p[1:]) if p[1:].replace(".", "").isdigit() else 0)
            lat = lat.sort_values(["proto", "_order"], kind="stable")
            for proto, part in lat.groupby("proto", sort=True):
                made[f"latency-{proto}"] = Markup(charts.grouped_bars(
                    part, group="label", series="pct", value="median", low="ci_low",
                    high="ci_high", chart_id=f"chart-latency-{proto}-{slug}",
                    ylabel=f"latency ({part['unit'].iloc[0]})", log=charts.needs_log(part["median"]),
                    title=f"{proto.upper()} {_latency_kind(part['metric'])} latency (sockperf "
                          "ping-pong): median with 95 % CI"))
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
            made["cpu"] = Markup(charts.grouped_bars(
                tcp_cpu if not tcp_cpu.empty else cpu, group="label", series="series", value="median", low="ci_low", high="ci_high",
                chart_id=f"chart-cpu-{slug}", ylabel=f"CPU ({cpu['unit'].iloc[0]})",
                title="TCP: busy CPU-seconds per transferred gigabit (lower is cheaper)"))
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
# formatting filters


def fmt(value: Any, digits: int = 3) -> str:
    """A number with ``digits`` significant digits ('—' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, str):
        return value
    if value == 0:
        return "0"
    mag = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - mag)
    return f"{value:,.{decimals}f}"


def pct(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value * 100:+.1f} %" if signed else f"{value * 100:.1f} %"


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
class Rendered:
    path: Path
    seconds: float
    sections: list[str]
    charts: int


def render(results: Results, output: Path, baseline: Results | None = None,
           rules: Rules | None = None) -> Rendered:
    """Write the report to ``output`` (atomically) and return what it contains."""
    started = time.monotonic()
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(["html"]),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["fmt"] = fmt
    env.filters["pct"] = pct
    matrices = connectivity_matrices(results)
    anatomy.annotate(matrices, results)
    benches = bench_legs(results)
    comparison = None
    mismatch: list[str] = []
    if baseline is not None:
        rules = rules or Rules()
        comparison = compare(results, baseline, rules)
        shown = []
        for unit, metric in zip(comparison["unit"], comparison["metric"]):
            shown.append(_scale(unit, metric))
        factor = [f for f, _ in shown]
        for col in ("median", "ci_low", "ci_high", "base_median", "base_ci_low", "base_ci_high"):
            comparison[col] = comparison[col] * factor
        comparison["unit"] = [u for _, u in shown]
        order = {"regressed": 0, "improved": 1, "same": 2}
        comparison = comparison.assign(_o=comparison["verdict"].map(order)).sort_values(
            ["_o", "role", "section", "label"], kind="stable").to_dict("records")
        mismatch = machine_mismatch(results.meta, baseline.meta)
    errors = bench_errors(results.tables["bench"])
    html = env.get_template("report.html").render(
        r=results, env_rows=_env(results.meta), matrices=matrices, dhcp=dhcp_tables(results),
        benches=benches, errors=errors.to_dict("records"), baseline=baseline,
        comparison=comparison, mismatch=mismatch, rules=rules,
        anatomy=anatomy.section(results, env),
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, html)
    sections = ["environment", "connectivity", "dhcp", "throughput", "latency", "cpu", "anatomy"]
    if baseline is not None:
        sections.append("baseline")
    n_charts = sum(len(b.charts) for b in benches)
    return Rendered(output, time.monotonic() - started, sections, n_charts)


def link_latest(output: Path) -> Path:
    """Point ``<reports>/latest`` at ``<reports>/<run-id>`` (relative link, replaced atomically)."""
    run_dir = output.parent
    latest = run_dir.parent / "latest"
    tmp = run_dir.parent / f".latest.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(run_dir.name, target_is_directory=True)
    os.replace(tmp, latest)
    return latest
