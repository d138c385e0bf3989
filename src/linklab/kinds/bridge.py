"""bridge: veth pairs enslaved to a Linux bridge in the host namespace; the bridge holds the
containers' gateway and the host routes."""

from __future__ import annotations

from linklab.kinds import veth

MODES: tuple[str, ...] = ()
FLAGS: tuple[str, ...] = ()
HOST_FORWARDS = True


def validate_mode(ctx, mode, flag) -> None:  # noqa: ANN001
    from linklab.kinds import check_choice
    check_choice(ctx, "mode", mode, MODES, "bridge")
    check_choice(ctx, "flag", flag, FLAGS, "bridge")


def validate(ctx, sc) -> None:  # noqa: ANN001
    if sc.bridge is None:
        raise ctx.fail("host.bridge", "missing: bridge kind needs [host.bridge] with ifname "
                                      "and the gateway addresses")
    for i, c in enumerate(sc.containers):
        if c.peer is None:
            raise ctx.fail(f"container[{i}].peer", "bridge kind: each container needs a "
                                                   "host-side peer ifname")
        if c.peer.addrs:
            raise ctx.fail(f"container[{i}].peer.addrs", "bridge ports carry no address; "
                                                         "put it on [host.bridge]")
    veth._two_containers(ctx, sc)


def prepare(topo) -> None:  # noqa: ANN001
    br = topo.scenario.bridge
    data = []
    if topo.scenario.ageing_time is not None:
        data.append(("IFLA_BR_AGEING_TIME", topo.scenario.ageing_time * 100))  # centiseconds
    index = topo.add_link("host", br.ifname, "bridge", mtu=topo.scenario.mtu, data=data)
    topo.add_addrs("host", index, br.addrs)


def attach(topo, c) -> int:  # noqa: ANN001
    index, peer_index = topo.add_veth(c.name, c.ifname, "host", c.peer.ifname,
                                      mtu=topo.scenario.mtu, address=c.mac)
    topo.enslave("host", peer_index, topo.index("host", topo.scenario.bridge.ifname))
    return index


def probe(nl, parent: int, mode, flag) -> None:  # noqa: ANN001
    nl.link_add("llprobe0", 0, "bridge")
