"""llcost over a live veth pair: every client measures what it was asked to, over IPv4 and
IPv6; a burst of small datagrams reaches the sink without a drop; failures name their cause;
and nothing (server process, namespace) outlives a measurement."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from linklab.bench import llcost
from linklab.bench.datapaths import VETH_PAIR, open_datapath
from linklab.bench.measure import Endpoints
from linklab.bench.tools import ToolFailure
from linklab.cmd import proc_starttime
from linklab.nsfs import NETNS_DIR
from linklab.ownership import Run, read_record

COUNT = 200


@pytest.fixture(autouse=True)
def _needs_root_and_cc() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, raw ICMP sockets)")
    if why := llcost.missing():
        pytest.skip(why)


@contextmanager
def veth_pair(run: Run) -> Iterator[Endpoints]:
    """The bench's veth-pair reference (server c1, client c2), owned by ``run``."""
    with open_datapath(VETH_PAIR, run) as ep:
        yield ep


def leftovers(run: Run, ep: Endpoints) -> list[str]:
    """The pair's namespaces still mounted or recorded, and any process the run recorded
    that is still alive."""
    left = read_record(run.record)
    out = [n for n in (ep.server.name, ep.client.name)
           if n in left.namespaces or os.path.exists(f"{NETNS_DIR}/{n}")]
    out += [f"pid {pid}" for pid, start in left.pids.items()
            if proc_starttime(pid) is not None and proc_starttime(pid) == start]
    return out


CLIENTS: dict[str, Callable[[Endpoints, str, Run], llcost.OpResult]] = {
    "udp-rr": lambda ep, a, run: llcost.udp_rr(ep.server, ep.client, a, COUNT, 64,
                                               warmup=20, run=run),
    "icmp-rr": lambda ep, a, run: llcost.icmp_rr(ep.client, a, COUNT, warmup=20, run=run),
    "udp-stream": lambda ep, a, run: llcost.udp_stream(ep.server, ep.client, a, COUNT, 64,
                                                       warmup=20, run=run),
    "tcp-crr": lambda ep, a, run: llcost.tcp_crr(ep.server, ep.client, a, COUNT, warmup=20,
                                                 run=run),
}


def test_binary_is_compiled_once_into_the_cache() -> None:
    first = llcost.binary()
    assert os.access(first, os.X_OK)
    assert llcost.binary() == first          # the second call is a cache hit


@pytest.mark.parametrize("family", ["v4", "v6"])
@pytest.mark.parametrize("op", CLIENTS)
def test_client_measures_its_count(run: Run, op: str, family: str) -> None:
    with veth_pair(run) as ep:
        res = CLIENTS[op](ep, ep.addr(family), run)
    assert (res.op, res.count) == (op, COUNT)
    assert res.ns > 0 and res.ns_per_op > 0
    assert leftovers(run, ep) == []


def test_udp_stream_burst_has_no_drops(run: Run) -> None:
    # a drop raises ToolFailure "udp-sink received X of 20000 datagrams (drops)"
    with veth_pair(run) as ep:
        res = llcost.udp_stream(ep.server, ep.client, ep.server_addr, 20000, 64, run=run)
    assert (res.count, res.bytes) == (20000, 20000 * 64)
    assert leftovers(run, ep) == []


def test_a_server_that_cannot_bind_is_named(run: Run) -> None:
    with veth_pair(run) as ep, pytest.raises(ToolFailure, match=r"llcost tcp-serve: bind "
                                             r"198\.18\.253\.9 port \d+: Cannot assign"):
        llcost.tcp_crr(ep.server, ep.client, "198.18.253.9", 10, run=run)
    assert leftovers(run, ep) == []


def test_an_unanswered_echo_is_named(run: Run) -> None:
    # an address of the pair's subnet that nobody has: no neighbour, no reply (2 s)
    with veth_pair(run) as ep, pytest.raises(ToolFailure, match=r"llcost icmp-rr: recv, echo 1 "
                                             r"of 3 from 198\.18\.254\.9: no reply within 2 s"):
        llcost.icmp_rr(ep.client, "198.18.254.9", 3, run=run)
    assert leftovers(run, ep) == []
