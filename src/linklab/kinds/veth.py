"""veth: one veth pair per container to the host namespace, routed by the host
(the Calico/Cilium-style baseline)."""

from __future__ import annotations

MODES: tuple[str, ...] = ()
FLAGS: tuple[str, ...] = ()
HOST_FORWARDS = True


def validate_mode(ctx, mode, flag) -> None:  # noqa: ANN001
    from linklab.kinds import check_choice
    check_choice(ctx, "mode", mode, MODES, "veth")
    check_choice(ctx, "flag", flag, FLAGS, "veth")


def validate(ctx, sc) -> None:  # noqa: ANN001
    if sc.bridge is not None:
        raise ctx.fail("host.bridge", "only the bridge kind has a host bridge")
    for i, c in enumerate(sc.containers):
        if c.peer is None or not c.peer.addrs:
            raise ctx.fail(f"container[{i}].peer", "veth kind: each container needs a host-side "
                                                   "peer with the gateway addresses")
    _two_containers(ctx, sc)


def _two_containers(ctx, sc) -> None:  # noqa: ANN001
    if len(sc.containers) < 2:
        raise ctx.fail("container", f"kind {sc.kind}: needs at least 2 containers, "
                                    f"got {len(sc.containers)}")


def prepare(topo) -> None:  # noqa: ANN001
    pass


def attach(topo, c) -> int:  # noqa: ANN001
    """Create the container's veth in its namespace, peer in the host namespace."""
    index, peer_index = topo.add_veth(c.name, c.ifname, "host", c.peer.ifname,
                                      mtu=topo.scenario.mtu, address=c.mac)
    topo.add_addrs("host", peer_index, c.peer.addrs)
    return index


def probe(nl, parent: int, mode, flag) -> None:  # noqa: ANN001
    nl.link_add("llprobe0", 0, "veth", peer={"ifname": "llprobe1"})
