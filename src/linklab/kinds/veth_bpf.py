"""veth-bpf: Cilium's "eBPF host routing" in miniature, on the routed veth shape.

tc ingress of each container's host-side veth: ``bpf_redirect_peer()`` into the destination
container when it is local, ``bpf_redirect_neigh()`` out of the parent NIC otherwise; tc
ingress of the parent: ``bpf_redirect_peer()`` into the local container owning the
destination. The host namespace does not forward (ip_forward=0, as the kernel's
selftests/bpf tc_redirect.c): every packet between links is moved by the programs.
"""

from __future__ import annotations

import ipaddress
import sys
from contextlib import ExitStack

from linklab import bpf
from linklab.kinds.common import validate_choices
from linklab.kinds.veth import attach as attach  # veth's hooks (the registry's)
from linklab.kinds.veth import prepare as prepare
from linklab.kinds.veth import probe as probe
from linklab.kinds.veth import validate as validate

# validated, prepared, attached and probed as veth: the BPF programs come in finish()

MODES: tuple[str, ...] = ()
FLAGS: tuple[str, ...] = ()
HOST_FORWARDS = False
KCONFIG = "CONFIG_NET_CLS_BPF, CONFIG_NET_SCH_INGRESS"
validate_mode = validate_choices(sys.modules[__name__], "veth-bpf")
FROM_CONTAINER, FROM_PARENT = "tc/from_container", "tc/from_parent"


def needs(mode: str | None, flag: str | None) -> str | None:
    """Why this machine cannot build veth-bpf (a missing tool), or None."""
    return bpf.missing()


def destinations(topo, host) -> dict[ipaddress.IPv4Address | ipaddress.IPv6Address, bpf.Dest]:
    """address -> (host-side ifindex, MAC) of the local container owning it; (0, None) for
    the host's own addresses."""
    sc = topo.scenario
    out: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, bpf.Dest] = {
        a.ip: (0, None) for a in host.node.addrs}
    for c in sc.containers_of(host.name):
        link = topo.ns(c.name).ipr.get_links(topo.index(c.name, c.ifname))[0]
        where = (topo.index(host.name, c.peer.ifname), link.get_attr("IFLA_ADDRESS"))
        out |= {a.ip: (0, None) for a in c.peer.addrs}
        out |= {a.ip: where for a in c.addrs}
    return out


def finish(topo, host, stack: ExitStack) -> None:
    """Attach the programs (they die with the host namespace's links) and fill their maps."""
    objs = bpf.objects(topo.run)
    ns = topo.ns(host.name)
    progs = [bpf.tc_attach(ns, c.peer.ifname, objs.redirect, FROM_CONTAINER)
             for c in topo.scenario.containers_of(host.name)]
    progs.append(bpf.tc_attach(ns, host.node.ifname, objs.redirect, FROM_PARENT))
    bpf.fill(progs, destinations(topo, host), topo.index(host.name, host.node.ifname))
    topo.programs[host.name] = progs


def detach(topo, host) -> None:
    """Remove every program of ``host`` (the tests' proof that the programs forward)."""
    ns = topo.ns(host.name)
    for dev in (*(c.peer.ifname for c in topo.scenario.containers_of(host.name)),
                host.node.ifname):
        bpf.tc_detach(ns, dev)
