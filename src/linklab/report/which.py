"""The report's "Which datapath?" section: two claims of Cilium's documentation as rows, each
with the evidence a saved run holds, and a plain statement where this machine cannot measure it.

Claim 1 (Cilium 1.9 documentation, "Life of a Packet", veth-based versus ipvlan-based
datapath): ipvlan beats veth because packets from the host namespace to a container do not
cross the kernel stack twice. Claim 2 (Cilium's upgrade guide, which deprecates ipvlan): eBPF
host routing on veth already performs better, so ipvlan is not needed. Computed from rows
only (``evidence``), rendered by the report template ``sections/which.html``.

Where the run has instruction-clock rows (:mod:`linklab.report.cost`), both claims are also
judged in guest instructions, ipvlan included, on the wire path (remote -> c1) and c2 -> c1,
with the cost section's test and threshold (:data:`COST_COMPARISONS`), and netkit against veth
per connection, the metric its published gain (+12 % connections per second) is quoted in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from linklab.bench.compare import finish, judge_one
from linklab.bench.stats import Summary, summarise
from linklab.report import cost
from linklab.report.aggregate import datapath_label

CLAIMS = {
    1: "Cilium's documentation claims ipvlan is faster than veth: packets do not traverse the "
       "host's stack twice (Cilium 1.9, Life of a Packet)",
    2: "Cilium's documentation claims eBPF on veth performs better, so ipvlan is no longer "
       "needed (Cilium's upgrade guide, ipvlan deprecated)",
}
# (label, direction, streams, metric, higher is better, scale, unit)
FIGURES = (
    ("TCP throughput, 1 stream", "forward", 1, "throughput_bps", True, 1e-9, "Gbit/s"),
    ("TCP throughput, 4 streams", "forward", 4, "throughput_bps", True, 1e-9, "Gbit/s"),
    ("TCP one-way latency p99", "pingpong", 1, "tcp_oneway_latency_p99_us", False, 1.0, "µs"),
    ("CPU per Gbit (1 stream)", "forward", 1, "cpu_s_per_gbit", False, 1.0, "s/Gbit"),
)
REMOTE_FLAG = "to-remote"
# judged with the instruction-clock figures (linklab.report.cost): (claim, candidate — one
# datapath, or a kind for every variant of it measured —, against, the metrics' directions)
COST_COMPARISONS: tuple[tuple[int, tuple[str, str, str] | str, tuple[str, str, str],
                              tuple[str, ...]], ...] = (
    (1, ("ipvlan", "l2", "bridge"), ("veth", "", ""), ("rr", "packet")),
    (1, ("ipvlan", "l3", "bridge"), ("veth", "", ""), ("rr", "packet")),
    (2, "veth-bpf", ("ipvlan", "l2", "bridge"), ("rr", "packet")),
    (2, "veth-bpf", ("ipvlan", "l3", "bridge"), ("rr", "packet")),
    # netkit, veth's eBPF successor: "+12 % connections per second over veth" (ByteDance,
    # quoted by Isovalent)
    (2, "netkit", ("veth", "", ""), ("conn",)),
)
NETKIT_GAIN = 0.12      # +12 % connections per second = 1 - 1/1.12 fewer instructions each
COST_WORDS = {"cheaper": "supports", "costlier": "contradicts", "within threshold": "within noise",
              "same": "within noise"}
COST_PATHS = {"child": "c2 → c1", "remote": "remote → c1"}


@dataclass(frozen=True)
class Evidence:
    """One row: a claim, what was compared, the figures and what they say."""

    claim: int
    measure: str
    verdict: str        # supports | contradicts | within noise | not measured | passed | failed
    detail: str


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""      # pandas gives NaN for empty cells


def _values(rows: Iterable[Mapping[str, Any]], datapath: str, flag: str, direction: str,
            streams: int, metric: str, leg: tuple[str, str]) -> list[float]:
    out = []
    for r in rows:
        if r.get("datapath") == datapath and _text(r.get("flag")) == flag \
                and r.get("direction") == direction and int(r.get("streams") or 0) == streams \
                and r.get("metric") == metric and not _text(r.get("error")) \
                and (str(r.get("kernel")), str(r.get("virt"))) == leg:
            try:
                value = float(r["value"])
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                out.append(value)
    return out


def _fmt(s: Summary, scale: float) -> str:
    return f"{s.median * scale:.3g} [{s.ci_low * scale:.3g}–{s.ci_high * scale:.3g}]"


def compare_figure(rows: list[Mapping[str, Any]], new: str, old: str, flag: str,
                   figure: tuple, leg: tuple[str, str], claim: int, path: str) -> Evidence:
    """``new`` against ``old`` for one figure: medians, 95 % CIs of the mean, the change."""
    label, direction, streams, metric, _higher, scale, unit = figure
    a = _values(rows, new, flag, direction, streams, metric, leg)
    b = _values(rows, old, flag, direction, streams, metric, leg)
    measure = f"{label}, {path}: {new} vs {old}"
    if not a or not b:
        return Evidence(claim, measure, "not measured",
                        f"no {metric} rows for {new if not a else old} in this run "
                        f"(pytest -m bench -k bpf measures them)")
    sa, sb = summarise(a), summarise(b)
    v = finish([judge_one(a, b, metric)])[0]    # the bench's own test (Welch on logs)
    verdict = {"better": "supports", "worse": "contradicts", "same": "within noise",
               "cannot": "cannot judge"}[v.kind]
    return Evidence(claim, measure, verdict,
                    f"{new} {_fmt(sa, scale)} vs {old} {_fmt(sb, scale)} {unit} (median "
                    f"[95 % CI], n={sa.n}/{sb.n}): {new} {v.text()}")


def _conn(rows: list[Mapping[str, Any]], kind: str, legs: list[tuple[str, str]],
          claim: int) -> list[Evidence]:
    out = []
    for leg in legs:
        mine = [r for r in rows if r.get("kind") == kind and
                (str(r.get("kernel")), str(r.get("virt"))) == leg]
        if not mine:
            continue
        counts = {o: sum(1 for r in mine if r.get("outcome") == o)
                  for o in ("passed", "failed", "skipped")}
        verdict = "failed" if counts["failed"] else ("passed" if counts["passed"] else
                                                    "not measured")
        out.append(Evidence(claim, f"{kind} connectivity, kernel {leg[0]} ({leg[1]})", verdict,
                            f"{counts['passed']} cells as expected, {counts['failed']} "
                            f"failed, {counts['skipped']} skipped"))
    return out


def _cost_text(values: list[float]) -> str:
    st = summarise(values)
    cv = f"CV {100 * st.cv:.2f} %" if math.isfinite(st.cv) else "one repetition"
    return f"{st.mean:.6g} ({cv}, n={st.n})"


def cost_evidence(rows: pd.DataFrame) -> list[Evidence]:
    """Rows of :data:`COST_COMPARISONS` judged with the instruction-clock figures
    (:func:`linklab.report.cost.cost_rows`): per kernel, path and metric, the candidate
    against the other datapath with the cost section's test and its 2 % threshold."""
    out: list[Evidence] = []
    for kernel in sorted(set(rows["kernel"]), key=cost.kernel_order, reverse=True):
        for claim, new, old, whats in COST_COMPARISONS:
            for what in whats:
                metric = next(m for m in cost.METRICS if m.what == what)
                for path, where in COST_PATHS.items():
                    figs = cost.figures(rows, kernel, path, metric.name)
                    news = [dp for dp in figs if dp == new or dp[0] == new]
                    for dp in news or [new if isinstance(new, tuple) else (new, "", "")]:
                        out.append(_cost_row(claim, figs.get(dp), figs.get(old), dp, old,
                                             metric, f"{where}, kernel {kernel}"))
    return out


def _cost_row(claim: int, a: list[float] | None, b: list[float] | None,
              new: tuple[str, str, str], old: tuple[str, str, str], metric: cost.CostMetric,
              where: str) -> Evidence:
    """One instruction-clock comparison as an evidence row."""
    name, other = datapath_label(*new), datapath_label(*old)
    measure = f"instructions per {metric.per} ({metric.title}), {where}: {name} vs {other}"
    if not a or not b:
        return Evidence(claim, measure, "not measured",
                        f"no {metric.name} rows for {name if not a else other} on this path "
                        f"(instruction clock: {' or '.join(cost.HOW_TO)})")
    (v,) = cost.judge([(a, b)], metric.name)
    verdict = COST_WORDS.get(v.word, "cannot judge")
    if v.text:
        said = v.text
    else:
        size, low, high = v.size
        word = v.word if v.judged and v.word != "within threshold" else (
            "costlier" if v.change_pct > 0 else "cheaper")
        said = f"{word} by {size:.1f} % [{low:.1f} – {high:.1f} %]"
        if v.word == "within threshold":
            said += f", below the {v.threshold_pct:g} % threshold"
    detail = (f"{name} {_cost_text(a)} vs {other} {_cost_text(b)} {metric.name.replace('_', ' ')} "
              f"(mean): {name} {said}")
    if new[0] == "netkit":
        detail += (f"; the published +{100 * NETKIT_GAIN:.0f} % connections per second would "
                   f"be {100 / (1 + NETKIT_GAIN) - 100:+.1f} % instructions per connection")
    return Evidence(claim, measure, verdict, detail)


def evidence(bench: list[Mapping[str, Any]], conn: list[Mapping[str, Any]],
             host: tuple[str, str], costs: pd.DataFrame | None = None) -> list[Evidence]:
    """Every row of the section, from saved bench and connectivity rows (and the
    instruction-clock rows, :func:`linklab.report.cost.cost_rows`, when the run has them)."""
    out: list[Evidence] = []
    by_cost = cost_evidence(costs) if costs is not None and not costs.empty else []
    measured = {e.claim for e in by_cost if e.verdict != "not measured"}
    conn_legs = sorted({(str(r.get("kernel")), str(r.get("virt"))) for r in conn})
    vm_legs = [leg for leg in conn_legs if leg != host]
    # claim 1: ipvlan vs veth, measured on this host only if its kernel has ipvlan
    if any(r.get("datapath") == "ipvlan" and (str(r.get("kernel")), str(r.get("virt")))
           == host for r in bench):
        for fig in FIGURES:
            out.append(compare_figure(bench, "ipvlan", "veth", "", fig, host, 1,
                                      "container ↔ container"))
    elif 1 not in measured:
        out.append(Evidence(1, "ipvlan vs veth throughput, latency, CPU", "not measured",
                            "this host's kernel lacks ipvlan (CONFIG_IPVLAN), and the VM leg "
                            "runs under QEMU TCG, which proves behaviour but is never a "
                            "wall-clock benchmark: its cost in instructions is measured by "
                            f"{' or '.join(cost.HOW_TO)}"))
    out += [e for e in by_cost if e.claim == 1]
    out += _conn(conn, "ipvlan", vm_legs or conn_legs, 1)
    out.append(Evidence(1, "per-packet path (stack traversals) ipvlan vs veth", "not measured",
                        "needs the per-packet anatomy (tracepoints per step); not in this run"))
    # claim 2: veth-bpf vs veth on the host, container <-> container and <-> remote
    for flag, path in (("", "container ↔ container"), (REMOTE_FLAG, "container ↔ remote")):
        for fig in FIGURES:
            out.append(compare_figure(bench, "veth-bpf", "veth", flag, fig, host, 2, path))
    if 2 not in measured:
        out.append(Evidence(2, "veth-bpf vs ipvlan", "not measured",
                            "ipvlan runs only in the TCG VM leg here: no comparable wall-clock "
                            f"figures (instructions: {' or '.join(cost.HOW_TO)})"))
    out += [e for e in by_cost if e.claim == 2] or [
        Evidence(2, "netkit vs veth, instructions per connection (published: +12 % "
                 "connections per second)", "not measured",
                 f"no instruction-clock rows in this run ({' or '.join(cost.HOW_TO)})")]
    out += _conn(conn, "veth-bpf", conn_legs, 2)
    out += _conn(conn, "netkit", vm_legs or conn_legs, 2)
    return out


VERDICT_CLASS = {"supports": "pass", "contradicts": "fail", "passed": "pass", "failed": "fail"}


def build(results: Any) -> dict[str, Any]:
    """The section's view data for a loaded :class:`~linklab.report.aggregate.Results`:
    the claims and their evidence rows (rendered by templates/sections/which.html)."""
    def records(name: str) -> list[dict]:
        frame = results.tables.get(name)
        return [] if frame is None or frame.empty else frame.to_dict("records")

    host = (str(results.meta.get("kernel", "")), str(results.meta.get("virt", "")))
    bench = results.tables.get("bench")
    costs = cost.cost_rows(bench) if bench is not None and not bench.empty else None
    rows = evidence(records("bench"), records("connectivity"), host, costs)
    return {"claims": [(c, text, [r for r in rows if r.claim == c]) for c, text in CLAIMS.items()],
            "css": VERDICT_CLASS}
