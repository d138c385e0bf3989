"""The datapath registry: one module per link kind.

A kind module provides ``MODES``/``FLAGS`` (empty when it has none), ``HOST_FORWARDS``,
``validate_mode(ctx, mode, flag, prefix)``, ``validate(ctx, scenario, host, where)``,
``prepare(topo, host)`` (per-host objects such as a bridge), ``attach(topo, container, host)``
(the container's link) and ``probe(nl, parent_index, mode, flag)`` used by the capability
table; optionally ``finish(topo, host, stack)`` (after every container is attached and
addressed: BPF programs and their maps; ``stack`` owns what must be released before the
namespaces), ``needs(mode, flag)`` (a missing tool, or None) and ``KCONFIG`` (the kernel option
named when the kernel refuses the link). Adding a datapath is adding one module and one line
below; what the kind modules share is in :mod:`linklab.kinds.common`.
"""

from __future__ import annotations

from types import ModuleType

from linklab.kinds import bridge, cni, ipvlan, macvlan, netkit, veth, veth_bpf

REGISTRY: dict[str, ModuleType] = {
    "veth": veth,
    "bridge": bridge,
    "macvlan": macvlan,
    "ipvlan": ipvlan,
    "cni": cni,
    "veth-bpf": veth_bpf,
    "netkit": netkit,
}


def foreign(kind: str) -> bool:
    """Whether another program (a CNI plugin) names and creates this kind's links: they are
    the same kernel links as a native scenario's, so the benchmark and the anatomy, which
    build and rename links themselves, leave such kinds to their native twins."""
    return bool(getattr(REGISTRY[kind], "FOREIGN", False))
