"""Measurement design without a live run: the v4+v6 matrix, CPU pinning, the disturbance
flag, the ping parser and the shuffled blocks."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from linklab import results as store
from linklab.bench import runner
from linklab.bench.datapaths import Datapath
from linklab.bench.measure import MATRIX, Endpoints, HostLoad, Layout, Outcome, Spec
from linklab.bench.tools import ToolFailure, parse_ping

PING = """PING 2001:db8:fe::1(2001:db8:fe::1) 56 data bytes
64 bytes from 2001:db8:fe::1: icmp_seq=1 ttl=64 time=0.039 ms
64 bytes from 2001:db8:fe::1: icmp_seq=2 ttl=64 time=0.006 ms
64 bytes from 2001:db8:fe::1: icmp_seq=3 ttl=64 time=0.021 ms
64 bytes from 2001:db8:fe::1: icmp_seq=4 ttl=64 time=1.250 ms

--- 2001:db8:fe::1 ping statistics ---
5 packets transmitted, 4 received, 20% packet loss, time 4ms
"""


def test_matrix_is_dual_stack_with_icmp_latency_for_both() -> None:
    v4 = {s.name for s in MATRIX if s.family == "v4"}
    v6 = {s.name for s in MATRIX if s.family == "v6"}
    assert {"tcp-forward-x1", "pingpong-tcp", "pingpong-icmp"} <= v4
    assert {"tcp-forward-x1-v6", "tcp-reverse-x4-v6", "udp-forward-x1-v6",
            "pingpong-icmp-v6"} <= v6
    assert not [s for s in MATRIX if s.family == "v6" and s.tool == "sockperf"]  # no IPv6 there


def test_ping_parser_takes_percentiles_and_loss() -> None:
    res = parse_ping(PING)
    assert res.rtts_us == (39.0, 6.0, 21.0, 1250.0)
    assert (res.sent, res.received) == (5, 4)
    assert res.percentile(50) == 21.0 and res.percentile(99) == 1250.0
    with pytest.raises(ToolFailure, match="no echo reply"):
        parse_ping("connect: Network is unreachable\n")


def test_layout_pins_the_ends_to_distinct_cpus() -> None:
    lay = Layout(0, 1)
    assert lay.iperf3("server") == ["-A", "0"] and lay.iperf3("client") == ["-A", "1"]
    assert lay.taskset("client", ["sockperf", "pp"]) == ["taskset", "-c", "1", "sockperf", "pp"]
    unpinned = Layout(None, None)
    assert unpinned.taskset("server", ["x"]) == ["x"] and unpinned.iperf3("client") == []
    assert lay.describe()["server_cpu"] == 0 and "unpinned" in unpinned.describe()["how"]


def test_disturbed_means_steal_or_load_beyond_the_cpus() -> None:
    assert not HostLoad(0.0, 2.9, 2).disturbed
    assert HostLoad(0.0, 3.1, 2).disturbed
    assert HostLoad(6.0, 0.1, 2).disturbed


def test_endpoints_without_v6_say_so() -> None:
    ep = Endpoints(None, None, "198.18.0.1")  # type: ignore[arg-type]
    assert ep.addr("v4") == "198.18.0.1"
    with pytest.raises(ToolFailure, match="no v6 address"):
        ep.addr("v6")


def test_blocks_interleave_datapaths_in_a_recorded_shuffled_order(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """run_blocks measures each datapath once per repetition, in a shuffled order that the
    seed reproduces, and stores the position and the disturbance of every row."""
    calls: list[tuple[str, int]] = []
    dps = [Datapath(f"dp{i}", f"dp{i}") for i in range(5)]
    spec = Spec("tcp-forward-x1", "iperf3", "tcp", "forward")

    def fake_measure(spec, ep, params, owner, port, layout):
        calls.append((ep.server_addr, len(calls)))
        from linklab.bench.measure import Figure
        return Outcome(spec, [Figure("throughput_bps", 1e9, "bit/s"),
                              Figure("cpu_s_per_gbit", 0.5, "s/Gbit")], "{}", "json",
                       host=HostLoad(0.0, 9.0, 2))

    @contextmanager
    def open_dp(dp: Datapath):
        yield Endpoints(None, None, dp.name)  # type: ignore[arg-type]

    monkeypatch.setattr(runner, "measure", fake_measure)
    monkeypatch.setattr(runner, "offloads", lambda ep: {})
    monkeypatch.setattr(runner, "sysctls", lambda ep: {})
    monkeypatch.setattr(runner, "tool_versions", dict)

    def run(seed: int, name: str) -> runner.Bench:
        b = runner.Bench(store.RunDir.create(tmp_path, name), object(),
                         runner.Settings(reps=4, warmup=0, specs=(spec,)), lambda _: None,
                         layout=Layout(0, 1), seed=seed)
        assert b.run_blocks(dps, open_dp) == {d.name: [] for d in dps}
        return b

    b = run(7, "a")
    blocks = b.meta["blocks"]
    assert len(blocks) == 4 and all(sorted(x) == [d.name for d in dps] for x in blocks)
    assert len({tuple(x) for x in blocks}) > 1          # the order changes between blocks
    assert [c[0] for c in calls] == [n for x in blocks for n in x]
    assert run(7, "b").meta["blocks"] == blocks         # the seed reproduces it
    rows = b.results.rows("bench")
    assert {r["position"] for r in rows} == set(range(5)) and all(r["disturbed"] for r in rows)
    assert b.disturbed == 20 and b.meta["layout"]["client_cpu"] == 1
