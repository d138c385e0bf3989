"""Sections "throughput", "latency" and "cpu": the bench figures of every leg, with their charts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from linklab.report.aggregate import (
    LOOPBACK,
    Leg,
    Results,
    bench_summary,
    latency_parts,
    with_efficiency,
)
from linklab.report.sections.common import ChartSpec, display_scale, needs_log

if TYPE_CHECKING:   # the view imports the sections to register them: no import circle
    from linklab.report.view import Inputs


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
            scale, unit = display_scale(thr["unit"].iloc[0], thr["metric"].iloc[0])
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
            lat["_order"] = lat["pct"].map(
                lambda p: float(p[1:]) if p[1:].replace(".", "").isdigit() else 0)
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
                tcp_cpu if not tcp_cpu.empty else cpu, group="label", series="series",
                value="median", low="ci_low", high="ci_high",
                chart_id=f"chart-cpu-{slug}", ylabel=f"CPU ({cpu['unit'].iloc[0]})",
                title="TCP: busy CPU-seconds per transferred gigabit (lower is cheaper)")
        other = s[s["section"] == "other"].copy()
        scaled = [display_scale(u, m) for u, m in zip(other["unit"], other["metric"])]
        for col in ("median", "ci_low", "ci_high"):
            other[f"shown_{col}"] = other[col] * [f for f, _ in scaled]
        other["shown_unit"] = [u for _, u in scaled]
        out.append(BenchLeg(
            leg=leg, charts=made, throughput=thr.to_dict("records"), latency=lat_rows,
            percentiles=percentiles, cpu=cpu.to_dict("records"), other=other.to_dict("records"),
            throughput_unit=unit,
            missing_loopback=not thr.empty and LOOPBACK not in set(thr["datapath"])))
    return out


def build(inputs: Inputs) -> list[BenchLeg]:
    """Sections "throughput", "latency" and "cpu": each shows its part of every bench leg."""
    return inputs.benches
