"""bridge: veth pairs enslaved to a Linux bridge in the host namespace; the bridge holds the
containers' gateway and the host routes."""

from __future__ import annotations

import sys

from linklab.kinds.common import container_count, validate_choices

MODES: tuple[str, ...] = ()
FLAGS: tuple[str, ...] = ()
HOST_FORWARDS = True
validate_mode = validate_choices(sys.modules[__name__], "bridge")


def validate(ctx, sc, host, where: str) -> None:
    if host.bridge is None:
        raise ctx.fail(f"{where}.bridge", "missing: bridge kind needs a bridge table with "
                                          "ifname and the gateway addresses")
    for i, c in enumerate(sc.containers):
        if c.host != host.name:
            continue
        if c.peer is None:
            raise ctx.fail(f"container[{i}].peer", "bridge kind: each container needs a "
                                                   "host-side peer ifname")
        if c.peer.addrs:
            raise ctx.fail(f"container[{i}].peer.addrs", "bridge ports carry no address; "
                                                         "put it on the host's bridge")
    container_count(ctx, sc, host, where)


def prepare(topo, host) -> None:
    data = []
    if host.ageing_time is not None:
        data.append(("IFLA_BR_AGEING_TIME", host.ageing_time * 100))  # centiseconds
    index = topo.add_link(host.name, host.bridge.ifname, "bridge", mtu=topo.scenario.mtu,
                          data=data)
    topo.add_addrs(host.name, index, host.bridge.addrs)


def attach(topo, c, host) -> int:
    index, peer_index = topo.add_veth(c.name, c.ifname, host.name, c.peer.ifname,
                                      mtu=topo.scenario.mtu, address=c.mac)
    topo.enslave(host.name, peer_index, topo.index(host.name, host.bridge.ifname))
    return index


def probe(nl, parent: int, mode, flag) -> None:
    nl.link_add("llprobe0", 0, "bridge")
