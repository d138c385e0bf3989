"""ipvlan: children share the parent's MAC (Documentation/networking/ipvlan.rst).

l2: the child does ARP/ND and gets broadcast/multicast; l3: the parent routes, no
broadcast, multicast or ARP (IFF_NOARP); l3s: like l3, but traffic passes the host
namespace's netfilter hooks. Flags: bridge (children talk locally), private (they do not),
vepa (child<->child goes to the upstream switch).
"""

from __future__ import annotations

import sys

from linklab.kinds.common import validate_choices
from linklab.kinds.macvlan import child_validate

MODES = ("l2", "l3", "l3s")
FLAGS = ("bridge", "private", "vepa")
HOST_FORWARDS = False
MODE_VALUE = {"l2": 0, "l3": 1, "l3s": 2}
FLAG_VALUE = {"bridge": 0, "private": 1, "vepa": 2}
validate_mode = validate_choices(sys.modules[__name__], "ipvlan")


def validate(ctx, sc, host, where: str) -> None:
    for i, c in enumerate(sc.containers):
        if c.host == host.name and c.mac is not None:
            raise ctx.fail(f"container[{i}].mac", "ipvlan children share the parent's MAC; "
                                                  "a child MAC cannot be set")
    child_validate(ctx, sc, host, where, single=False)


def prepare(topo, host) -> None:
    pass


def link_data(mode: str, flag: str | None) -> list:
    return [("IFLA_IPVLAN_MODE", MODE_VALUE[mode]),
            ("IFLA_IPVLAN_FLAGS", FLAG_VALUE[flag or "bridge"])]


def attach(topo, c, host) -> int:
    return topo.add_child(c, "ipvlan", link_data(host.mode, host.flag))


def probe(nl, parent: int, mode, flag) -> None:
    nl.link_add("llprobe1", 0, "ipvlan", link=parent, data=link_data(mode, flag))
