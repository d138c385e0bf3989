"""Parsers of the benchmark tools, on saved output (tests/data/bench/, captured from iperf3
3.12 and sockperf 3.7 on Debian 12)."""

from __future__ import annotations

import json

import pytest

from linklab.bench.measure import pct_name
from linklab.bench.tools import ToolFailure, parse_iperf3, parse_sockperf
from tests import DATA

BENCH = DATA / "bench"


def text(name: str) -> str:
    return (BENCH / name).read_text()


def test_tcp_forward_uses_the_servers_intervals_after_the_warm_up() -> None:
    """The server's six intervals from 0.500801 s on: 530710528 + 214236919 + 236781833 +
    453246976 + 280494080 + 285605888 bytes in 1.506169 s (the first two, 502 MB in 0.5 s,
    are the warm-up)."""
    res = parse_iperf3(text("iperf3-tcp-1.json"), omit_s=0.5)
    assert res.protocol == "TCP" and res.streams == 1 and not res.reverse
    assert res.bytes == 2_001_076_224
    assert res.seconds == pytest.approx(1.506169, abs=1e-6)
    assert res.bits_per_second == pytest.approx(10.6287e9, rel=1e-4)
    assert res.cpu_host_pct == 25.4548542767792       # end.cpu_utilization_percent.host_total
    assert res.lost_percent is None and res.jitter_ms is None


def test_no_warm_up_keeps_every_interval() -> None:
    full = parse_iperf3(text("iperf3-tcp-1.json"), omit_s=0.0)
    sliced = parse_iperf3(text("iperf3-tcp-1.json"), omit_s=0.5)
    assert full.seconds == pytest.approx(2.0, abs=0.05)
    assert full.bytes > sliced.bytes


def test_reverse_uses_the_clients_own_intervals() -> None:
    """The client's (receiving) six intervals from 0.500201 s on, 1387921408 bytes; the
    server's would count what it sent."""
    res = parse_iperf3(text("iperf3-tcp-4-reverse.json"), omit_s=0.5)
    assert res.reverse and res.streams == 4
    assert res.bytes == 1_387_921_408
    assert res.seconds == pytest.approx(1.499977, abs=1e-6)


def test_udp_loss_and_jitter_from_the_receiver() -> None:
    """The server's six intervals after the warm-up: 91 of 5722 datagrams lost, and the mean
    of their jitters (0.0088 .. 0.0283 ms)."""
    res = parse_iperf3(text("iperf3-udp.json"), omit_s=0.5)
    assert res.protocol == "UDP" and res.target_bps == 1e9
    assert res.lost_percent == pytest.approx(1.590353, abs=1e-6)     # 100 * 91 / 5722
    assert res.jitter_ms == pytest.approx(0.0189801, abs=1e-7)


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
