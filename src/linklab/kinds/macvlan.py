"""macvlan: children of the host's parent NIC moved into the containers, each with its own MAC.

Documentation/networking/macvlan: the child never talks to its parent's own address; modes
decide child<->child: bridge switches locally, vepa sends to the upstream switch (needs
hairpin), private never, passthru gives the parent to a single child.
"""

from __future__ import annotations

import sys

from linklab.kinds.common import container_count, no_bridge, validate_choices

MODES = ("bridge", "vepa", "private", "passthru")
FLAGS: tuple[str, ...] = ()
HOST_FORWARDS = False
MODE_VALUE = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}  # MACVLAN_MODE_*
validate_mode = validate_choices(sys.modules[__name__], "macvlan")


def validate(ctx, sc, host, where: str) -> None:
    child_validate(ctx, sc, host, where, single=host.mode == "passthru")


def child_validate(ctx, sc, host, where: str, single: bool) -> None:
    no_bridge(ctx, host, where)
    for i, c in enumerate(sc.containers):
        if c.host == host.name and c.peer is not None:
            raise ctx.fail(f"container[{i}].peer", f"{host.kind} children have no host-side "
                                                   "peer")
    container_count(ctx, sc, host, where, single)


def prepare(topo, host) -> None:
    pass


def link_data(mode: str) -> list:
    return [("IFLA_MACVLAN_MODE", MODE_VALUE[mode])]


def attach(topo, c, host) -> int:
    """Create the child on the parent, directly inside the container's namespace."""
    return topo.add_child(c, "macvlan", link_data(host.mode), address=c.mac)


def probe(nl, parent: int, mode, flag) -> None:
    nl.link_add("llprobe1", 0, "macvlan", link=parent, data=link_data(mode))
