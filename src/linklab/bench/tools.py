"""Parsers for the benchmark tools' output: ``iperf3 -J`` and ``sockperf ping-pong``.

Pure functions on text, tested on saved output (tests/data/bench/). A run that failed
raises :class:`ToolFailure` with the tool's own words.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

EPS_S = 1e-3  # interval start times are floats; allow this much slack when slicing


class ToolFailure(RuntimeError):
    """The tool ran but did not measure; the message is the tool's error text."""


@dataclass(frozen=True)
class IperfResult:
    """Receiver-side figures over the kept intervals (warm-up intervals dropped)."""

    protocol: str                  # "TCP" | "UDP"
    streams: int
    reverse: bool
    bits_per_second: float         # received bits / kept seconds
    seconds: float                 # length of the kept window
    bytes: int
    omitted_s: float               # warm-up seconds dropped
    cpu_host_pct: float            # iperf3's cpu_utilization_percent.host_total (client)
    cpu_remote_pct: float          # ... remote_total (server)
    lost_percent: float | None = None   # UDP only
    jitter_ms: float | None = None      # UDP only
    target_bps: float | None = None     # UDP offered rate


def _receiver_intervals(doc: dict[str, Any], reverse: bool) -> list[dict[str, Any]]:
    """The receiver's intervals: the client's own in reverse mode, else the server's
    (``--get-server-output``); empty when the server's output is missing."""
    if reverse:
        return doc.get("intervals", [])
    server = doc.get("server_output_json") or {}
    return server.get("intervals", [])


def parse_iperf3(text: str, omit_s: float = 0.0) -> IperfResult:
    """Parse ``iperf3 -J --get-server-output`` client output; drop intervals starting before
    ``omit_s`` (the warm-up). Raises :class:`ToolFailure` on an error or an empty run."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:   # also too deep, or an int too long
        head = text.strip().splitlines()[:3]
        raise ToolFailure(f"iperf3: output is not JSON ({exc}): {' '.join(head)[:300]}") \
            from None
    if not isinstance(doc, dict):
        raise ToolFailure(f"iperf3: output is JSON but not an object: {text.strip()[:300]}")
    if doc.get("error"):
        raise ToolFailure(f"iperf3: {doc['error']}")
    try:
        return _iperf3_result(doc, omit_s)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise ToolFailure(f"iperf3: a field is missing or of the wrong type "
                          f"({type(exc).__name__}: {str(exc)[:200]})") from None


def _iperf3_result(doc: dict[str, Any], omit_s: float) -> IperfResult:
    """The figures of a parsed ``iperf3 -J`` document (a missing or mistyped field raises
    whatever Python raises; :func:`parse_iperf3` words it)."""
    start = doc.get("start", {}).get("test_start", {})
    protocol = start.get("protocol", "TCP")
    reverse = bool(start.get("reverse", 0))
    streams = int(start.get("num_streams", 1))
    end = doc.get("end", {})
    cpu = end.get("cpu_utilization_percent", {})
    kept = [iv["sum"] for iv in _receiver_intervals(doc, reverse)
            if not iv["sum"].get("omitted") and iv["sum"]["start"] >= omit_s - EPS_S
            and iv["sum"]["seconds"] > EPS_S]
    udp = protocol == "UDP"
    if kept:
        nbytes = sum(int(s["bytes"]) for s in kept)
        seconds = sum(float(s["seconds"]) for s in kept)
        lost = sum(int(s.get("lost_packets", 0)) for s in kept) if udp else None
        packets = sum(int(s.get("packets", 0)) for s in kept) if udp else None
        jitters = [float(s["jitter_ms"]) for s in kept if "jitter_ms" in s] if udp else []
    else:
        # no receiver intervals (server output missing, or warm-up as long as the run):
        # fall back to iperf3's own end-of-test receiver summary
        total = end.get("sum_received") or end.get("sum")
        if not total or omit_s > 0 and total.get("seconds", 0) <= omit_s:
            raise ToolFailure(f"iperf3: no receiver interval after the {omit_s:g} s warm-up "
                              "(is the duration longer than the warm-up?)")
        nbytes, seconds = int(total["bytes"]), float(total["seconds"])
        lost, packets = total.get("lost_packets"), total.get("packets")
        jitters = [float(total["jitter_ms"])] if "jitter_ms" in total else []
    if seconds <= 0:
        raise ToolFailure("iperf3: measured window has zero length")
    loss = None
    if udp:
        loss = 100.0 * lost / packets if packets else (100.0 if nbytes == 0 else 0.0)
    return IperfResult(
        protocol=protocol, streams=streams, reverse=reverse,
        bits_per_second=nbytes * 8 / seconds, seconds=seconds, bytes=nbytes,
        omitted_s=omit_s, cpu_host_pct=float(cpu.get("host_total", float("nan"))),
        cpu_remote_pct=float(cpu.get("remote_total", float("nan"))),
        lost_percent=loss,
        jitter_ms=(sum(jitters) / len(jitters)) if jitters else None,
        target_bps=float(start["target_bitrate"]) if udp and start.get("target_bitrate")
        else None)


# ---- sockperf --------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NUM = r"(\d+(?:\.\d+)?)"   # a decimal figure (not "." or "1.2.3")
_PCT = re.compile(rf"percentile\s+{_NUM}\s*=\s*{_NUM}")
_VALID = re.compile(rf"\[Valid Duration\] RunTime={_NUM} sec; SentMessages=(\d+); "
                    r"ReceivedMessages=(\d+)")
_SUMMARY = re.compile(rf"Summary: (Latency|Round trip) is {_NUM} usec")
_DROPPED = re.compile(r"# dropped messages = (\d+)")
_OBS = re.compile(r"Total (\d+) observations")


@dataclass(frozen=True)
class SockperfResult:
    """One ping-pong run. ``measure`` says what the numbers are: ``"one-way"`` (sockperf's
    default: round-trip time / 2) or ``"rtt"`` (``--full-rtt``); all in microseconds."""

    measure: str
    protocol: str                          # "tcp" | "udp"
    percentiles_us: dict[float, float] = field(default_factory=dict)  # 50.0 -> us
    avg_us: float = 0.0
    observations: int = 0
    valid_s: float = 0.0
    dropped: int = 0

    def p(self, pct: float) -> float:
        return self.percentiles_us[pct]


def parse_sockperf(text: str) -> SockperfResult:
    """Parse ``sockperf ping-pong`` output (stdout and stderr together)."""
    try:
        return _sockperf_result(text)
    except ValueError as exc:     # a count longer than Python converts (4300 digits)
        raise ToolFailure(f"sockperf: a figure is not a number ({str(exc)[:200]})") from None


def _sockperf_result(text: str) -> SockperfResult:
    clean = _ANSI.sub("", text)
    errors = [ln.split("ERROR:", 1)[1].strip() for ln in clean.splitlines() if "ERROR:" in ln]
    if errors:
        raise ToolFailure("sockperf: " + "; ".join(errors))
    summary = _SUMMARY.search(clean)
    pcts = {float(p): float(v) for p, v in _PCT.findall(clean)}
    if summary is None or not pcts:
        tail = " ".join(clean.strip().splitlines()[-3:])[:300]
        raise ToolFailure(f"sockperf: no latency summary in its output: {tail}")
    proto = "tcp" if re.search(r"PORT\s*=\s*\d+\s*#\s*TCP", clean) else "udp"
    valid = _VALID.search(clean)
    obs = _OBS.search(clean)
    dropped = _DROPPED.search(clean)
    return SockperfResult(
        measure="one-way" if summary.group(1) == "Latency" else "rtt", protocol=proto,
        percentiles_us=pcts, avg_us=float(summary.group(2)),
        observations=int(obs.group(1)) if obs else 0,
        valid_s=float(valid.group(1)) if valid else 0.0,
        dropped=int(dropped.group(1)) if dropped else 0)


# ---- ping (iputils) --------------------------------------------------------------------------

_PING_TIME = re.compile(rf"icmp_seq=\d+ .*?time={_NUM} ms")
# (?<!\d): never from inside a run of digits, where each start would rescan the rest of the run
# (quadratic: 20000 digits of garbage took 4 s)
_PING_SENT = re.compile(r"(?<!\d)(\d+) packets transmitted, (\d+) received")


@dataclass(frozen=True)
class PingResult:
    """Round-trip times of ICMP echo requests answered by the peer's kernel (no userspace
    server involved), in microseconds, in the order received."""

    rtts_us: tuple[float, ...]
    sent: int
    received: int

    def percentile(self, pct: float) -> float:
        """Nearest-rank percentile of the round-trip times."""
        ordered = sorted(self.rtts_us)
        rank = max(1, math.ceil(pct / 100 * len(ordered)))
        return ordered[rank - 1]


def parse_ping(text: str) -> PingResult:
    """Parse iputils ``ping -n`` output (one line per reply); ToolFailure without replies."""
    rtts = tuple(float(m) * 1000 for m in _PING_TIME.findall(text))
    sent = _PING_SENT.search(text)
    if not rtts:
        tail = " ".join(text.strip().splitlines()[-2:])[:300]
        raise ToolFailure(f"ping: no echo reply: {tail}")
    try:
        return PingResult(rtts, int(sent.group(1)) if sent else len(rtts),
                          int(sent.group(2)) if sent else len(rtts))
    except ValueError as exc:     # a count longer than Python converts (4300 digits)
        raise ToolFailure(f"ping: a packet count is not a number ({str(exc)[:200]})") from None
