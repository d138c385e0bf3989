"""The eBPF datapaths, live: the programs build (clang), they do the forwarding (detached, the
forwarded cells change), the host's netfilter no longer sees redirected container traffic, and
nothing survives a kill -9 beyond the next clean. Netkit's attributes are in tests/unit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from linklab import bpf, kinds, ownership
from linklab.build import Topology, build
from linklab.capabilities import missing_link, missing_tool
from linklab.checks import Cell, cells
from linklab.cmd import cmd, require
from linklab.model import Scenario
from linklab.probes import Observer, observe

BPF_SCENARIOS = ("veth-bpf", "netkit-l3-bpf", "netkit-l2-bpf")


def skip_unless_buildable(sc: Scenario) -> None:
    for h in sc.hosts:
        if why := missing_link(h.kind, h.mode, h.flag):
            pytest.skip(why)


# ---- the programs build -----------------------------------------------------------------------


def test_programs_compile_into_a_cache_keyed_by_their_source() -> None:
    if why := bpf.missing():
        pytest.skip(why)
    first = bpf.objects()
    assert first.redirect.exists() and os.access(first.loader, os.X_OK)
    assert bpf.objects() == first          # the second call is a cache hit
    elf = first.redirect.read_bytes()
    assert elf[:4] == b"\x7fELF" and elf[18] == 247, f"{first.redirect}: not a BPF ELF object"
    for sec in (b"tc/from_container", b"tc/from_parent", b"tc/netkit_peer", b".BTF"):
        assert sec + b"\0" in elf, f"{first.redirect}: no section {sec.decode()}"


# ---- the programs forward ------------------------------------------------------------------

def observe_all(topo: Topology) -> dict[str, str]:
    """check-family id -> observed result, for every packet cell of the topology."""
    obs = Observer(topo, cells(topo.scenario))
    return {c.id: obs.observe(c).result for c in obs.cells}


# cells a working BPF datapath forwards, which the host stack cannot carry with forwarding off
FORWARDED = {"child-to-child", "child-to-gateway", "child-to-remote", "mtu-exact",
             "host-netfilter"}
# the host's own traffic, which never needed forwarding
LOCAL = {"child-to-host", "host-to-child"}


@pytest.mark.connectivity
@pytest.mark.parametrize("name", BPF_SCENARIOS)
def test_detaching_the_programs_changes_the_forwarded_cells(name: str, run, scenario) -> None:
    sc = scenario(name)
    skip_unless_buildable(sc)
    if why := missing_tool("nft"):
        pytest.skip(why)
    with build(sc, run) as topo:
        host = sc.hosts[0]
        with_progs = observe_all(topo)
        assert with_progs == {c.id: c.expected for c in cells(sc)}
        kinds.REGISTRY[host.kind].detach(topo, host)
        without = observe_all(topo)
    changed = {cid for cid in with_progs if with_progs[cid] != without[cid]}
    want = {c.id for c in cells(sc) if c.check in FORWARDED}
    assert changed == want, f"changed {sorted(changed)}, expected {sorted(want)}"
    assert all(without[c.id] == "pass" for c in cells(sc) if c.check in LOCAL)


# c1 -> c2 with an nftables drop in the host namespace (prerouting, echo requests to c2)
NETFILTER_C2C = {
    "veth": ("blocked", "routed by the host: the packet passes its prerouting hook"),
    "veth-bpf": ("pass", "tc ingress peer-redirects into c2 before netfilter sees it"),
    "netkit-l3-forward": ("blocked", "policy forward hands the packet to the host stack"),
    "netkit-l3-bpf": ("pass", "the peer program redirects in netkit's transmit, before netfilter"),
    "netkit-l2-forward": ("blocked", "policy forward hands the packet to the host stack"),
    "netkit-l2-bpf": ("pass", "the peer program redirects in netkit's transmit, before netfilter"),
}


@contextmanager
def drop_echo_to(topo: Topology, node: str) -> Iterator[None]:
    """An nftables drop of echo requests to ``node`` at prerouting in the host namespace."""
    nft = require("nft", "nftables")
    n = topo.scenario.node(node)
    host = topo.ns(n.host)
    ruleset = ("table inet ll_c2c {\n chain pre {\n"
               "  type filter hook prerouting priority 0; policy accept;\n"
               f"  ip daddr {n.addr(4).ip} icmp type echo-request drop\n"
               f"  ip6 daddr {n.addr(6).ip} icmpv6 type echo-request drop\n }}\n}}\n")
    cmd([nft, "-f", "-"], ns=host, input=ruleset, timeout=10)
    try:
        yield
    finally:
        cmd([nft, "delete", "table", "inet", "ll_c2c"], ns=host, timeout=10)


@pytest.mark.connectivity
@pytest.mark.parametrize("name", NETFILTER_C2C)
def test_host_netfilter_and_container_to_container(name: str, run, scenario) -> None:
    expected, why = NETFILTER_C2C[name]
    sc = scenario(name)
    skip_unless_buildable(sc)
    if w := missing_tool("nft"):
        pytest.skip(w)
    probe_cells = [Cell(sc.name, fam, "child-to-child", expected, why) for fam in ("v4", "v6")]
    with build(sc, run) as topo, drop_echo_to(topo, "c2"):
        seen = observe(topo, probe_cells)
    for c in probe_cells:
        assert seen[c.id].result == expected, f"{c.id}: expected {expected} ({why}); " \
                                              f"observed {seen[c.id].detail}"


# ---- kill -9 -------------------------------------------------------------------------------

HOLDER = """
# PR_SET_PDEATHSIG: die with the test
import ctypes, signal; ctypes.CDLL(None).prctl(1, signal.SIGKILL)
import json, sys, time
from linklab.build import build
from linklab.model import load_scenario
from linklab.ownership import Run
run = Run()
with build(load_scenario(sys.argv[1]), run) as topo:
    print(json.dumps({"progs": [p for ps in topo.programs.values() for p in ps],
                      "ns": [ns.name for ns in topo.namespaces.values()]}), flush=True)
    time.sleep(600)
"""


@pytest.mark.connectivity
@pytest.mark.parametrize("name", BPF_SCENARIOS)
def test_nothing_survives_a_kill_9(name: str, run, scenario, poll) -> None:
    sc = scenario(name)
    skip_unless_buildable(sc)
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(sc.path)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()
        assert line, f"the builder died: {proc.stderr.read()}"
        live = json.loads(line)
        objs = [("prog", p) for p in live["progs"]] + [
            ("map", m) for maps in bpf.maps_of(live["progs"]).values() for m in maps.values()]
        assert live["progs"] and all(bpf.loaded(*o) for o in objs)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    # killed mid-run: the programs live on with the namespaces (and holders) it owned ...
    assert all(bpf.loaded(*o) for o in objs)
    ownership.clean(log=lambda _m: None)
    # ... and the next clean, which removes exactly those, takes every program and map along
    assert not any(os.path.lexists(f"/run/netns/{n}") for n in live["ns"])
    assert poll(lambda: not any(bpf.loaded(*o) for o in objs)), \
        f"still loaded after clean: {[o for o in objs if bpf.loaded(*o)]}"
