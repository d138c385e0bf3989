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


MODE_VALUE = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}  # MACVLAN_MODE_*


def link_data(mode: str) -> list:
    return [("IFLA_MACVLAN_MODE", MODE_VALUE[mode])]


def attach(topo, c) -> int:  # noqa: ANN001
    """Create the child on the parent, directly inside the container's namespace."""
    return topo.add_child(c, "macvlan", link_data(topo.scenario.mode), address=c.mac)


def probe(nl, parent: int, mode, flag) -> None:  # noqa: ANN001
    nl.link_add("llprobe1", 0, "macvlan", link=parent, data=link_data(mode))
