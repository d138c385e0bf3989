"""macvlan: children of the host's parent NIC moved into the containers, each with its own MAC.

Documentation/networking/macvlan: the child never talks to its parent's own address; modes
decide child<->child: bridge switches locally, vepa sends to the upstream switch (needs
hairpin), private never, passthru gives the parent to a single child.
"""

from __future__ import annotations

MODES = ("bridge", "vepa", "private", "passthru")
FLAGS: tuple[str, ...] = ()
HOST_FORWARDS = False


def validate_mode(ctx, mode, flag) -> None:  # noqa: ANN001
    from linklab.kinds import check_choice
    check_choice(ctx, "mode", mode, MODES, "macvlan")
    check_choice(ctx, "flag", flag, FLAGS, "macvlan")


def validate(ctx, sc) -> None:  # noqa: ANN001
    child_validate(ctx, sc, single=sc.mode == "passthru")


def child_validate(ctx, sc, single: bool) -> None:  # noqa: ANN001
    if sc.bridge is not None:
        raise ctx.fail("host.bridge", "only the bridge kind has a host bridge")
    for i, c in enumerate(sc.containers):
        if c.peer is not None:
            raise ctx.fail(f"container[{i}].peer", f"{sc.kind} children have no host-side peer")
    if single and len(sc.containers) != 1:
        raise ctx.fail("container", f"{sc.label}: the parent admits exactly one child, "
                                    f"got {len(sc.containers)}")
    if not single and len(sc.containers) < 2:
        raise ctx.fail("container", f"{sc.label}: needs at least 2 containers, "
                                    f"got {len(sc.containers)}")


def prepare(topo) -> None:  # noqa: ANN001
    pass


def link_attrs(mode: str) -> dict:
    return {"kind": "macvlan", "macvlan_mode": mode}


def attach(topo, c) -> int:  # noqa: ANN001
    """Create the child on the parent, directly inside the container's namespace."""
    return topo.add_child(c, link_attrs(topo.scenario.mode), address=c.mac)


def probe(ipr, parent: int, mode, flag) -> None:  # noqa: ANN001
    ipr.link("add", ifname="llprobe1", link=parent, **link_attrs(mode))
