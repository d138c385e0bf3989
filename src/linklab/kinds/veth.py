"""veth: one veth pair per container to the host namespace, routed by the host
(the Calico/Cilium-style baseline)."""

from __future__ import annotations

import sys

from linklab.kinds.common import container_count, no_bridge, validate_choices

MODES: tuple[str, ...] = ()
FLAGS: tuple[str, ...] = ()
HOST_FORWARDS = True
validate_mode = validate_choices(sys.modules[__name__], "veth")


def validate(ctx, sc, host, where: str) -> None:
    no_bridge(ctx, host, where)
    for i, c in enumerate(sc.containers):
        if c.host == host.name and (c.peer is None or not c.peer.addrs):
            raise ctx.fail(f"container[{i}].peer", "veth kind: each container needs a host-side "
                                                   "peer with the gateway addresses")
    container_count(ctx, sc, host, where)


def prepare(topo, host) -> None:
    pass


def attach(topo, c, host) -> int:
    """Create the container's veth in its namespace, peer in its host's namespace."""
    index, peer_index = topo.add_veth(c.name, c.ifname, host.name, c.peer.ifname,
                                      mtu=topo.scenario.mtu, address=c.mac)
    topo.add_addrs(host.name, peer_index, c.peer.addrs)
    return index


def probe(nl, parent: int, mode, flag) -> None:
    nl.link_add("llprobe0", 0, "veth", peer={"ifname": "llprobe1"})
