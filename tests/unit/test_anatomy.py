"""Datapath anatomy without a kernel: the trace parser, attributing events to probes,
probe lengths, renaming, the counting ruleset and the results table, and the report's
Anatomy section rebuilt from saved rows."""

from __future__ import annotations

import itertools
import json
import shutil
import textwrap
from pathlib import Path

import pytest

from linklab.anatomy import nftcount, tracefs
from linklab.anatomy.datapaths import (
    Cell,
    renamed,
    scenario_cells,
    scenario_datapaths,
)
from linklab.anatomy.measure import (
    BASE_BYTES,
    FREES_KEPT_MAX,
    MARK,
    STRIDE,
    Anatomy,
    Probe,
    Windows,
    attribute,
    minus,
    probes_of,
    rows,
)
from linklab.model import SHIPPED, load_scenario
from linklab.report.aggregate import load_results
from linklab.report.render import render
from linklab.results import TABLES, RunDir
from tests import DATA

SCENARIOS = scenario_datapaths(SHIPPED)


# an instance's trace file: the header, then one line per hit (task-pid, [CPU], flags, timestamp,
# event, fields)
TASK = "          python-123     [001] b..1.   "
TRACE = "".join(f"{line}\n" for line in (
    "# tracer: nop",
    "#",
    "# entries-in-buffer/entries-written: 6/6   #P:2",
    "#",
    f"{TASK}100.000100: tracing_mark_write: linklab-probe 0",
    f"{TASK}100.000200: net_dev_queue: dev=a1234p1 skbaddr=00000000aaaa0001 len=714",
    f"{TASK}100.000300: netif_rx: dev=a1234p2 skbaddr=00000000aaaa0001 len=700",
    f"{TASK}100.000400: kfree_skb: skbaddr=00000000aaaa0001 rx_sk=0000000000000000 protocol=2048"
    " location=ip_rcv_finish_core+0x1c9/0x4a0 reason: IP_LOCAL_SOURCE",
    f"{TASK}100.000500: tracing_mark_write: linklab-probe 1",
    f"{TASK}100.000600: kfree_skb: skbaddr=00000000aaaa0001 rx_sk=0000000000000000 protocol=34525"
    " location=ip6_mc_input+0x1/0x2 reason: NOT_SPECIFIED",
))


def test_a_trace_parses_into_events_in_order() -> None:
    events = tracefs.parse(TRACE)
    assert [e.event for e in events] == ["tracing_mark_write", "net_dev_queue", "netif_rx",
                                         "kfree_skb", "tracing_mark_write", "kfree_skb"]
    assert events[1].dev == "a1234p1" and events[1].len == 714
    assert events[3].location == "ip_rcv_finish_core" and events[3].reason == "IP_LOCAL_SOURCE"
    assert events[0].mark == f"{MARK} 0"


# a per_cpu/cpuN/stats file of a buffer that kept its oldest events and refused 14350 more
STATS = textwrap.dedent("""\
    entries: 1564
    overrun: 0
    commit overrun: 0
    bytes: 69360
    oldest event ts: 22011.838792
    now ts: 22012.332214
    dropped events: 14350
    read events: 0
    """)


def test_a_cpus_stats_say_how_many_events_it_kept_and_did_not_keep() -> None:
    assert tracefs.counted(STATS) == (1564, 14350)
    assert tracefs.counted(STATS.replace("overrun: 0\n", "overrun: 7\n", 1)) == (1564, 14357)
    assert tracefs.counted(STATS.replace("14350", "0")) == (1564, 0)


def test_drops_go_to_the_probe_that_last_carried_the_skb_within_its_window() -> None:
    cell = Cell("child-to-child", "v4", "c1", "c2", "blocked")
    results = {p.index: Anatomy(p, sent=True) for p in probes_of([cell])}
    attribute(tracefs.parse(TRACE), results, {"a1234p1": "c1/eth0", "a1234p2": "c2/eth0"})
    request, reply = results[0], results[1]
    assert request.steps == [("queue", "c1/eth0"), ("rx", "c2/eth0")]
    # the second drop reuses the address inside the next probe's window: not the request's
    assert request.drops == [("IP_LOCAL_SOURCE", "ip_rcv_finish_core")]
    assert request.end == "dropped" and reply.drops == []


class FakeInstance:
    """A tracefs instance without a kernel: it records what it is given while on, its loss
    counter moves when told, calls are logged."""

    def __init__(self) -> None:
        self.recorded: list[tracefs.Event] = []
        self.count = 0
        self.on = False
        self.calls: list[str] = []
        self.path = "instances/fake"

    def record(self, events: list[tracefs.Event], lost: int = 0) -> None:
        assert self.on
        self.recorded += events
        self.count += lost

    def counts(self) -> tuple[int, int]:
        return len(self.recorded), self.count

    def lost(self) -> int:
        return self.count

    def clear(self) -> None:
        self.calls.append("clear")
        self.recorded, self.count = [], 0

    def start(self) -> None:
        self.calls.append("start")
        self.on = True

    def pause(self) -> None:
        self.calls.append("pause")
        self.on = False

    def mark(self, text: str) -> None:
        self.calls.append(f"mark {text}")
        self.recorded.append(tracefs.Event(0.0, 0, "tracing_mark_write", "", mark=text))

    def events(self) -> list[tracefs.Event]:
        self.calls.append("events")
        return list(self.recorded)


def _free(addr: str, reason: str = "") -> tracefs.Event:
    if reason:
        return tracefs.Event(0.0, 0, "kfree_skb", addr, location="f", reason=reason)
    return tracefs.Event(0.0, 0, "consume_skb", addr, location="f")


def test_a_net_loss_is_charged_to_the_window_open_and_the_one_before() -> None:
    """A net event the kernel refused while window 5 was open may have been 5's or a late
    one of the window before (3, in this pass's order), never of an earlier one."""
    net, frees = FakeInstance(), FakeInstance()
    w = Windows(net, frees)  # type: ignore[arg-type]
    for index in (0, 3):
        w.open(index)
        w.close(index, False)
    w.open(5)
    net.count = 12
    w.close(5, False)
    w.finish()
    assert w.lossy() == {3: "12 net events in the next window", 5: "12 net events"}
    assert [c for c in net.calls if c.startswith("mark")] == \
        [f"mark {MARK} {i}" for i in (0, 3, 5)]
    # a free buffer holding few events is not emptied (that waits for an RCU grace period)
    assert "clear" not in frees.calls


def test_a_windows_frees_are_read_only_when_they_matter_and_none_was_lost() -> None:
    """The free instance records only inside windows; what another user's drops did to it
    matters only in the window of a probe that was not delivered, and a window reads only
    the frees after its own mark."""
    net, frees = FakeInstance(), FakeInstance()
    w = Windows(net, frees)  # type: ignore[arg-type]
    w.open(0)
    frees.record([_free("a0", "SOCKET_RCVBUFF")], lost=900)   # a burst; 0 was delivered
    w.close(0, False)
    w.open(1)                    # 0's loss: emptied first
    frees.record([_free("a1", "NETFILTER_DROP"), _free("b1")])
    w.close(1, True)             # not delivered, nothing lost: its frees are read
    w.open(2)
    frees.record([_free("a2", "SOCKET_RCVBUFF")], lost=40)
    w.close(2, True)             # not delivered, and 40 events lost while it was open
    w.open(3)
    frees.record([_free("a3", "NO_SOCKET")])
    w.close(3, True)
    w.finish()
    assert w.lossy() == {2: "40 free events"}
    assert [(e.skbaddr, e.reason) for e in w.free_events] == \
        [("a1", "NETFILTER_DROP"), ("b1", ""), ("a3", "NO_SOCKET")]
    assert frees.calls.count("clear") == 2 and frees.calls.count("events") == 2


def test_a_free_buffer_holding_many_events_is_emptied_before_the_next_window() -> None:
    net, frees = FakeInstance(), FakeInstance()
    w = Windows(net, frees)  # type: ignore[arg-type]
    w.open(0)
    frees.record([_free(f"{n:x}") for n in range(FREES_KEPT_MAX + 1)])
    w.close(0, False)
    w.open(1)
    assert frees.calls.count("clear") == 1 and frees.counts() == (1, 0)   # 1's mark


def test_a_freed_skbs_address_is_another_packets_in_the_same_window() -> None:
    """After the probe's skb is dropped (or consumed), its address is free: a datagram
    reusing it and dropped in the same window (another user's, SOCKET_RCVBUFF) is not the
    probe's (seen once as NETFILTER_DROP,NOT_SPECIFIED before a free ended the chain)."""
    udp_drop = ("rx_sk=00000000000000c3 protocol=2048 location=udp_queue_rcv_one_skb+0x1/0x2 "
                "reason: SOCKET_RCVBUFF")
    text = "".join(f"{TASK}{line}\n" for line in (
        "1.000001: tracing_mark_write: linklab-probe 0",
        "1.000002: netif_receive_skb: dev=a1234p2 skbaddr=00000000000000a1 len=700",
        "1.000003: kfree_skb: skbaddr=00000000000000a1 rx_sk=0000000000000000 protocol=34525"
        " location=nft_do_chain+0x1/0x2 reason: NETFILTER_DROP",
        f"1.000004: kfree_skb: skbaddr=00000000000000a1 {udp_drop}",
        "1.000005: netif_receive_skb: dev=a1234p2 skbaddr=00000000000000b1 len=700",
        "1.000006: consume_skb: skbaddr=00000000000000b1 location=f+0x1/0x2",
        f"1.000007: kfree_skb: skbaddr=00000000000000b1 {udp_drop}",
    ))
    cell = Cell("child-to-child", "v6", "c1", "c2", "blocked")
    results = {p.index: Anatomy(p, sent=True) for p in probes_of([cell])}
    attribute(tracefs.parse(text), results, {"a1234p2": "c2/eth0"})
    assert results[0].drops == [("NETFILTER_DROP", "nft_do_chain")]


def test_probe_lengths_are_distinct_and_fit_the_mtu() -> None:
    sc = load_scenario(SHIPPED / "veth.toml")
    probes = probes_of(scenario_cells(sc))
    spans = [p.lengths for p in probes]
    assert len(probes) == 20
    assert all(hi < lo2 for (_, hi), (lo2, _) in itertools.pairwise(spans))
    assert spans[-1][1] < sc.mtu
    assert all(len(p.payload()) + (28 if p.cell.family == "v4" else 48) == p.ip_bytes
               for p in probes)
    assert probes[0].ip_bytes == BASE_BYTES and probes[1].ip_bytes == BASE_BYTES + STRIDE


@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_renaming_gives_every_interface_a_unique_name(sc) -> None:
    live, names = renamed(sc, "a1f2c")
    ifnames = [n.ifname for n in (*(h.node for h in live.hosts), live.upstream, live.remote,
                                  *live.containers)]
    ifnames += [c.peer.ifname for c in live.containers if c.peer]
    ifnames += [h.bridge.ifname for h in live.hosts if h.bridge]
    assert len(set(ifnames)) == len(ifnames)
    assert all(len(n) <= 15 and n in names for n in ifnames)
    for node in (*live.containers, live.upstream, live.remote, *(h.node for h in live.hosts)):
        for r in node.routes:
            assert r.dev is None or r.dev in names, f"{sc.name}: route {r} names an old device"


def test_counting_ruleset_and_counters_parse() -> None:
    text = nftcount.ruleset("inet", {"p0": (700, 731, "v4"), "p1": (732, 763, "v6")})
    assert text.count("meta length 700-731 icmp type { echo-request, echo-reply } counter") \
        == len(nftcount.HOOKS)
    # an ICMPv6 error quoting p0 (+48 bytes) has p1's length: only echoes count
    assert text.count("meta length 732-763 icmpv6 type { echo-request, echo-reply } counter") \
        == len(nftcount.HOOKS)
    sample = {"nftables": [
        {"rule": {"family": "inet", "table": nftcount.TABLE, "chain": "forward",
                  "comment": "p1", "expr": [{"match": {}}, {"counter": {"packets": 2,
                                                                        "bytes": 1}}]}},
        {"rule": {"family": "inet", "table": "other", "chain": "forward", "comment": "p1",
                  "expr": [{"counter": {"packets": 9, "bytes": 1}}]}}]}
    assert nftcount.parse_counters(json.dumps(sample)) == {("inet", "forward", "p1"): 2}


def test_the_results_table_takes_every_row_field() -> None:
    cell = Cell("host-to-child", "v6", "host", "c1", "pass")
    a = Anatomy(Probe(0, cell, "request"), sent=True, delivered=True,
                steps=[("queue", "host/eth0"), ("stack", "c1/eth0")])

    class T:
        name, kind, mode, flag = "x", "veth", "", ""
    (row,) = rows(T(), [a], "6.18", "none")  # type: ignore[arg-type]
    assert set(row) == set(TABLES["anatomy"])
    assert row["queue"] == 1 and row["stack"] == 1 and row["stack_ns"] == "c1"
    assert a.line("veth") == ("anatomy veth host-to-child/v6 request: queue=1 xmit=0 rx=0 "
                              "stack=1 nf=0 drop=-")
    assert Anatomy(Probe(1, cell, "reply")).line("v").endswith("drop=not-sent")


def test_a_loopback_hit_counts_only_on_the_probes_own_skb() -> None:
    """Every namespace's loopback is "lo": a hit is the probe's only if the same skb carried
    the probe in the step before, inside its window (ipvlan l3 delivers to the master's own
    address through lo)."""
    text = textwrap.dedent("""\
        p-1 [000] b..1. 1.000001: tracing_mark_write: linklab-probe 0
        p-1 [000] b..1. 1.000002: net_dev_queue: dev=a1234p1 skbaddr=00000000000000a1 len=714
        p-1 [000] b..1. 1.000003: net_dev_queue: dev=lo skbaddr=00000000000000a1 len=700
        p-1 [000] b..1. 1.000004: netif_rx: dev=lo skbaddr=00000000000000ff len=700
        p-1 [000] b..1. 1.000005: netif_receive_skb: dev=lo skbaddr=00000000000000a1 len=700
        """)
    cell = Cell("child-to-host", "v4", "c1", "host", "pass")
    results = {p.index: Anatomy(p, sent=True) for p in probes_of([cell])}
    attribute(tracefs.parse(text), results, {"a1234p1": "c1/eth0"})
    assert results[0].steps == [("queue", "c1/eth0"), ("queue", "lo"), ("stack", "lo")]


def test_a_shared_port_name_counts_only_the_probes_own_skb() -> None:
    """The upstream switch's ports have fixed names (p-host, to-remote) in every run: another
    run's packet of the probe's length there is not counted (seen once under load)."""
    text = textwrap.dedent("""\
        p-1 [000] b..1. 1.000001: tracing_mark_write: linklab-probe 0
        p-1 [000] b..1. 1.000002: net_dev_queue: dev=a1234p1 skbaddr=00000000000000a1 len=714
        p-1 [000] b..1. 1.000003: netif_rx: dev=p-host skbaddr=00000000000000a1 len=700
        p-1 [001] b..1. 1.000004: net_dev_queue: dev=p-host skbaddr=00000000000000b2 len=714
        p-1 [000] b..1. 1.000005: netif_receive_skb: dev=p-host skbaddr=00000000000000a1 len=700
        """)
    cell = Cell("child-to-remote", "v4", "c1", "remote", "pass")
    results = {p.index: Anatomy(p, sent=True) for p in probes_of([cell])}
    attribute(tracefs.parse(text), results, {"a1234p1": "c1/eth0", "p-host": "upstream/p-host"},
              frozenset({"p-host"}))
    assert results[0].steps == [("queue", "c1/eth0"), ("rx", "upstream/p-host"),
                                ("stack", "upstream/p-host")]


def test_the_reply_is_the_round_trip_minus_the_request() -> None:
    cell = Cell("host-to-child", "v4", "host", "c1", "pass")
    req, rt = (Anatomy(p, sent=True, delivered=True) for p in probes_of([cell]))
    req.steps = [("queue", "host/vc1"), ("stack", "c1/eth0")]
    req.hooks = [("host", "inet", "output", 1), ("c1", "inet", "input", 1)]
    rt.steps = [*req.steps, ("queue", "c1/eth0"), ("stack", "host/vc1")]
    rt.hooks = [("host", "inet", "output", 1), ("c1", "inet", "input", 1),
                ("c1", "inet", "output", 1), ("host", "inet", "input", 1)]
    reply = minus(rt, req)
    assert reply.steps == [("queue", "c1/eth0"), ("stack", "host/vc1")]
    assert reply.hooks == [("c1", "inet", "output", 1), ("host", "inet", "input", 1)]
    assert reply.probe.direction == "reply" and reply.delivered


def test_the_report_shows_the_anatomy_and_why_a_matrix_cell_is_blocked(tmp_path: Path) -> None:
    """From saved rows only: the Anatomy section with the datapath's counts, the stack-entry
    summary, and "blocked because" on the matrix cell whose round trip did not complete."""
    run_dir = Path(shutil.copytree(DATA / "results-sample",
                                   tmp_path / "20250101T100000Z-sample"))
    cell = Cell("child-to-child", "v4", "c1", "c2", "blocked")
    request, reply = (Anatomy(p, sent=True) for p in probes_of([cell]))
    request.steps = [("queue", "c1/eth0"), ("xmit", "c1/eth0")]
    request.drops = [("OTHERHOST", "ip_rcv_core")]
    reply.sent = False
    reply.send_error = "request not delivered"

    class T:
        name, kind, mode, flag = "macvlan-private", "macvlan", "private", ""
    store = RunDir(run_dir)
    for row in rows(T(), [request, reply], "6.18.44-linklab", "none"):  # type: ignore[arg-type]
        store.append("anatomy", row)
    html = render(load_results(run_dir), tmp_path / "index.html").path.read_text()
    section = html[html.index('<section id="anatomy">'):]
    assert "macvlan private" in section and "dropped: OTHERHOST in ip_rcv_core" in section
    assert "blocked because: request dropped: OTHERHOST in ip_rcv_core" in html.split(
        '<section id="anatomy">')[0]
