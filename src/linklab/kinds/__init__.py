"""The datapath registry: one module per link kind.

A kind module provides ``MODES``/``FLAGS`` (empty when it has none), ``HOST_FORWARDS``,
``validate_mode(ctx, mode, flag, prefix)``, ``validate(ctx, scenario, host, where)``,
``prepare(topo, host)`` (per-host objects such as a bridge), ``attach(topo, container, host)``
(the container's link) and ``probe(nl, parent_index, mode, flag)`` used by the capability
table; optionally ``finish(topo, host, stack)`` (after every container is attached and
addressed: BPF programs and their maps; ``stack`` owns what must be released before the
namespaces), ``needs(mode, flag)`` (a missing tool, or None) and ``KCONFIG`` (the kernel option
named when the kernel refuses the link). Adding a datapath is adding one module and one line
below.
"""

from __future__ import annotations

from types import ModuleType

from linklab.kinds import bridge, cni, ipvlan, macvlan, netkit, veth, veth_bpf
from linklab.kinds.common import check_choice, container_count, no_bridge, validate_choices

__all__ = ["REGISTRY", "check_choice", "container_count", "foreign", "no_bridge",
           "validate_choices"]


def foreign(kind: str) -> bool:
    """Whether another program (a CNI plugin) names and creates this kind's links: they are
    the same kernel links as a native scenario's, so the benchmark and the anatomy, which
    build and rename links themselves, leave such kinds to their native twins."""
    return bool(getattr(REGISTRY[kind], "FOREIGN", False))

REGISTRY: dict[str, ModuleType] = {
    "veth": veth,
    "bridge": bridge,
    "macvlan": macvlan,
    "ipvlan": ipvlan,
    "cni": cni,
    "veth-bpf": veth_bpf,
    "netkit": netkit,
}
