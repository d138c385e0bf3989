"""Parsers of the benchmark tools, on saved output (tests/data/bench/, captured from iperf3
3.12 and sockperf 3.7 on Debian 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests import DATA

from linklab.bench.measure import pct_name
from linklab.bench.tools import ToolFailure, parse_iperf3, parse_sockperf

BENCH = DATA / "bench"


def text(name: str) -> str:
    return (BENCH / name).read_text()


def test_tcp_forward_uses_the_servers_intervals_after_the_warm_up() -> None:
    raw = text("iperf3-tcp-1.json")
    doc = json.loads(raw)
    kept = [i["sum"] for i in doc["server_output_json"]["intervals"] if i["sum"]["start"] >= 0.499]
    res = parse_iperf3(raw, omit_s=0.5)
    assert res.protocol == "TCP" and res.streams == 1 and not res.reverse
    assert res.bytes == sum(s["bytes"] for s in kept)
    assert res.seconds == pytest.approx(sum(s["seconds"] for s in kept))
    assert res.bits_per_second == pytest.approx(res.bytes * 8 / res.seconds)
    assert res.seconds == pytest.approx(1.5, abs=0.05)
    assert res.cpu_host_pct == doc["end"]["cpu_utilization_percent"]["host_total"]
    assert res.lost_percent is None and res.jitter_ms is None


def test_no_warm_up_keeps_every_interval() -> None:
    full = parse_iperf3(text("iperf3-tcp-1.json"), omit_s=0.0)
    sliced = parse_iperf3(text("iperf3-tcp-1.json"), omit_s=0.5)
    assert full.seconds == pytest.approx(2.0, abs=0.05)
    assert full.bytes > sliced.bytes


def test_reverse_uses_the_clients_own_intervals() -> None:
    raw = text("iperf3-tcp-4-reverse.json")
    doc = json.loads(raw)
    res = parse_iperf3(raw, omit_s=0.5)
    assert res.reverse and res.streams == 4
    kept = [i["sum"] for i in doc["intervals"] if i["sum"]["start"] >= 0.499]
    assert res.bytes == sum(s["bytes"] for s in kept)


def test_udp_loss_and_jitter_from_the_receiver() -> None:
    raw = text("iperf3-udp.json")
    doc = json.loads(raw)
    kept = [i["sum"] for i in doc["server_output_json"]["intervals"] if i["sum"]["start"] >= 0.499]
    res = parse_iperf3(raw, omit_s=0.5)
    assert res.protocol == "UDP" and res.target_bps == 1e9
    lost = sum(s["lost_packets"] for s in kept)
    packets = sum(s["packets"] for s in kept)
    assert res.lost_percent == pytest.approx(100 * lost / packets)
    assert res.jitter_ms == pytest.approx(sum(s["jitter_ms"] for s in kept) / len(kept))


def test_missing_server_output_falls_back_to_the_end_summary() -> None:
    doc = json.loads(text("iperf3-tcp-1.json"))
    del doc["server_output_json"]
    res = parse_iperf3(json.dumps(doc), omit_s=0.5)
    assert res.bytes == doc["end"]["sum_received"]["bytes"]


def test_iperf3_error_and_garbage_raise_with_the_tools_words() -> None:
    with pytest.raises(ToolFailure, match="unable to connect to server"):
        parse_iperf3(text("iperf3-error.json"))
    with pytest.raises(ToolFailure, match="not JSON"):
        parse_iperf3("iperf3: error - something\n")


def test_warm_up_longer_than_the_run_is_an_error() -> None:
    doc = json.loads(text("iperf3-tcp-1.json"))
    with pytest.raises(ToolFailure, match="warm-up"):
        parse_iperf3(json.dumps(doc), omit_s=5.0)


def test_sockperf_one_way_percentiles() -> None:
    res = parse_sockperf(text("sockperf-udp.txt"))
    assert res.measure == "one-way" and res.protocol == "udp"
    assert res.p(50.0) == 7.05 and res.p(90.0) == 7.871
    assert res.p(99.0) == 106.963 and res.p(99.9) == 258.026
    assert res.observations == 28820 and res.valid_s == 0.55 and res.dropped == 0


def test_sockperf_tcp_and_full_rtt_are_told_apart() -> None:
    assert parse_sockperf(text("sockperf-tcp.txt")).protocol == "tcp"
    rtt = parse_sockperf(text("sockperf-udp-rtt.txt"))
    assert rtt.measure == "rtt" and rtt.avg_us == 43.306


def test_sockperf_error() -> None:
    with pytest.raises(ToolFailure, match="Connection refused"):
        parse_sockperf(text("sockperf-error.txt"))
    with pytest.raises(ToolFailure, match="no latency summary"):
        parse_sockperf("sockperf: Test ended\n")


def test_percentile_names() -> None:
    assert [pct_name(p) for p in (50.0, 90.0, 99.0, 99.9)] == ["p50", "p90", "p99", "p999"]
