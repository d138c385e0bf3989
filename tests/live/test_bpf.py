"""The eBPF datapaths: netkit attributes reach the wire, the BPF programs do the forwarding
(detached, the forwarded cells change), the host's netfilter no longer sees redirected
container traffic, and nothing survives a kill -9 beyond the next clean."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from linklab import bpf, kinds, ownership
from linklab.build import Topology, build
from linklab.capabilities import missing_link, missing_tool
from linklab.checks import Cell, cells
from linklab.cmd import cmd, require
from linklab.kinds import netkit
from linklab.model import SHIPPED, Scenario, load_scenario
from linklab.nl import Rtnl
from linklab.probes import Observer, observe

BPF_SCENARIOS = ("veth-bpf", "netkit-l3-bpf", "netkit-l2-bpf")


def scenario(name: str) -> Scenario:
    return load_scenario(SHIPPED / f"{name}.toml")


def skip_unless_buildable(sc: Scenario) -> None:
    for h in sc.hosts:
        if why := missing_link(h.kind, h.mode, h.flag):
            pytest.skip(why)


# ---- encoding -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", netkit.MODES)
def test_netkit_attributes_reach_the_wire(mode: str) -> None:
    peer = {"index": 42, "attrs": [("IFLA_IFNAME", "eth0"), ("IFLA_MTU", 1400)]}
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", "nk0"), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "netkit"), ("IFLA_INFO_DATA", {"attrs": netkit.link_data(mode, peer)})
    ]})]
    msg.encode()
    got = Rtnl.encoded_info_data(msg)
    peer_back = got.pop("IFLA_NETKIT_PEER_INFO")
    assert got == {"IFLA_NETKIT_MODE": netkit.MODE_VALUE[mode], "IFLA_NETKIT_POLICY": 0,
                   "IFLA_NETKIT_PEER_POLICY": 0}
    assert peer_back["index"] == 42
    assert peer_back.get_attr("IFLA_IFNAME") == "eth0"
    assert peer_back.get_attr("IFLA_MTU") == 1400
    assert netkit.MODE_VALUE == {"l2": 0, "l3": 1}   # enum netkit_mode (uapi if_link.h)


def test_map_keys_map_ipv4_into_ipv6() -> None:
    assert bpf.addr_key(ipaddress.ip_address("198.18.10.2")).hex() == \
        "00000000000000000000ffffc6120a02"
    assert bpf.addr_key(ipaddress.ip_address("2001:db8::1")) == \
        ipaddress.ip_address("2001:db8::1").packed


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
def test_detaching_the_programs_changes_the_forwarded_cells(name: str, run) -> None:
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
def test_host_netfilter_and_container_to_container(name: str, run) -> None:
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
import ctypes, signal; ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the test
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


def wait_for(cond, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


@pytest.mark.connectivity
@pytest.mark.parametrize("name", BPF_SCENARIOS)
def test_nothing_survives_a_kill_9(name: str, run) -> None:
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
    assert wait_for(lambda: not any(bpf.loaded(*o) for o in objs)), \
        f"still loaded after clean: {[o for o in objs if bpf.loaded(*o)]}"
