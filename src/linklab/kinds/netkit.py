"""netkit (drivers/net/netkit.c, 6.7+): a BPF-programmable veth. The primary is in the host
namespace, the peer in the container, routed like veth.

Modes: l3 (no ARP; all-zero MACs) and l2 (MACs, ARP/ND). Flags: ``forward`` (no programs: the
default policy passes every packet across, like a veth) and ``bpf`` (a program attached at
BPF_NETKIT_PEER through the primary redirects like veth-bpf, with the host namespace's
forwarding turned off; the parent's tc ingress program peer-redirects inbound traffic).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack

from linklab import bpf
from linklab.kinds.common import validate_choices
from linklab.kinds.veth import validate as validate  # a hook: veth's shape
from linklab.kinds.veth_bpf import FROM_PARENT, destinations

MODES = ("l3", "l2")
FLAGS = ("forward", "bpf")
HOST_FORWARDS = True          # flag bpf turns it off once its programs are attached
KCONFIG = "CONFIG_NETKIT"
MODE_VALUE = {"l2": 0, "l3": 1}   # enum netkit_mode
NETKIT_PASS = 0                   # enum netkit_action: the default policy, "forward"
PEER_SECTION = "tc/netkit_peer"
validate_mode = validate_choices(sys.modules[__name__], "netkit")


def link_data(mode: str, peer: dict) -> list:
    return [("IFLA_NETKIT_PEER_INFO", peer), ("IFLA_NETKIT_MODE", MODE_VALUE[mode]),
            ("IFLA_NETKIT_POLICY", NETKIT_PASS), ("IFLA_NETKIT_PEER_POLICY", NETKIT_PASS)]


def needs(mode: str | None, flag: str | None) -> str | None:
    return bpf.missing() if flag == "bpf" else None


def prepare(topo, host) -> None:
    pass


def attach(topo, c, host) -> int:
    """The primary (``peer.ifname``) in the host namespace, the peer (``ifname``) in ``c``."""
    index, primary = topo.next_index(c.name), topo.next_index(host.name)
    peer = {"index": index, "attrs": [("IFLA_IFNAME", c.ifname),
                                      ("IFLA_NET_NS_FD", topo.ns(c.name).fd),
                                      ("IFLA_MTU", topo.scenario.mtu)]}
    topo._netlink(host.name, f"create {c.peer.ifname} (netkit {host.mode}) for {c.name}",
                  topo.ns(host.name).nl.link_add, c.peer.ifname, primary, "netkit",
                  mtu=topo.scenario.mtu, data=link_data(host.mode, peer))
    topo.register(host.name, c.peer.ifname, primary)
    topo.register(c.name, c.ifname, index)
    topo.up(host.name, primary)
    topo.up(c.name, index)
    topo.add_addrs(host.name, primary, c.peer.addrs)
    return index


def finish(topo, host, stack: ExitStack) -> None:
    """flag bpf: attach the peer programs (each held by an owned process) and the parent's tc
    program, fill their maps, then stop the host from forwarding."""
    if host.flag != "bpf":
        return
    objs = bpf.objects(topo.run)
    ns = topo.ns(host.name)
    progs = [stack.enter_context(bpf.netkit_attach(ns, topo.index(host.name, c.peer.ifname),
                                                   objs, PEER_SECTION, "peer", topo.run))
             for c in topo.scenario.containers_of(host.name)]
    progs.append(bpf.tc_attach(ns, host.node.ifname, objs.redirect, FROM_PARENT))
    bpf.fill(progs, destinations(topo, host), topo.index(host.name, host.node.ifname))
    topo.programs[host.name] = progs
    with ns.enter():
        for key in ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"):
            with open(f"/proc/sys/{key}", "w") as fh:
                fh.write("0")


def detach(topo, host) -> None:
    """Detach every program of ``host`` (its netkit links, then the parent's tc program)."""
    bpf.link_detach(topo.programs.get(host.name, []))
    bpf.tc_detach(topo.ns(host.name), host.node.ifname)


def probe(nl, parent: int, mode, flag) -> None:
    nl.link_add("llprobe0", 0, "netkit", data=link_data(
        mode, {"index": 0, "attrs": [("IFLA_IFNAME", "llprobe1")]}))
