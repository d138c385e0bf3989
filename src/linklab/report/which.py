"""The report's "Which datapath?" section: two claims of Cilium's documentation as rows, each
with the evidence a saved run holds, and a plain statement where this machine cannot measure it.

Claim 1 (Cilium 1.9 documentation, "Life of a Packet", veth-based versus ipvlan-based
datapath): ipvlan beats veth because packets from the host namespace to a container do not
cross the kernel stack twice. Claim 2 (Cilium's upgrade guide, which deprecates ipvlan): eBPF
host routing on veth already performs better, so ipvlan is not needed. Computed from rows
only (``evidence``), rendered by the report template ``sections/which.html``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from linklab.bench.compare import finish, judge_one
from linklab.bench.stats import Summary, summarise

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


def evidence(bench: list[Mapping[str, Any]], conn: list[Mapping[str, Any]],
             host: tuple[str, str]) -> list[Evidence]:
    """Every row of the section, from saved bench and connectivity rows."""
    out: list[Evidence] = []
    conn_legs = sorted({(str(r.get("kernel")), str(r.get("virt"))) for r in conn})
    vm_legs = [leg for leg in conn_legs if leg != host]
    # claim 1: ipvlan vs veth, measured on this host only if its kernel has ipvlan
    if any(r.get("datapath") == "ipvlan" and (str(r.get("kernel")), str(r.get("virt")))
           == host for r in bench):
        for fig in FIGURES:
            out.append(compare_figure(bench, "ipvlan", "veth", "", fig, host, 1,
                                      "container ↔ container"))
    else:
        out.append(Evidence(1, "ipvlan vs veth throughput, latency, CPU", "not measured",
                            "this host's kernel lacks ipvlan (CONFIG_IPVLAN), and the VM leg "
                            "runs under QEMU TCG, which proves behaviour but is never a "
                            "benchmark: this machine cannot measure claim 1"))
    out += _conn(conn, "ipvlan", vm_legs or conn_legs, 1)
    out.append(Evidence(1, "per-packet path (stack traversals) ipvlan vs veth", "not measured",
                        "needs the per-packet anatomy (tracepoints per step); not in this run"))
    # claim 2: veth-bpf vs veth on the host, container <-> container and <-> remote
    for flag, path in (("", "container ↔ container"), (REMOTE_FLAG, "container ↔ remote")):
        for fig in FIGURES:
            out.append(compare_figure(bench, "veth-bpf", "veth", flag, fig, host, 2, path))
    out.append(Evidence(2, "veth-bpf vs ipvlan", "not measured",
                        "ipvlan runs only in the TCG VM leg here: no comparable figures"))
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
    rows = evidence(records("bench"), records("connectivity"), host)
    return {"claims": [(c, text, [r for r in rows if r.claim == c]) for c, text in CLAIMS.items()],
            "css": VERDICT_CLASS}
