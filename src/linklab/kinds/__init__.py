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


def check_choice(ctx, field: str, value: str | None, choices: tuple[str, ...],  # noqa: ANN001
                 kind: str, prefix: str = "") -> None:
    """Validate an enumerated field (mode, flag) against the kind's choices."""
    field = prefix + field
    if not choices:
        if value is not None:
            raise ctx.fail(field, f"kind {kind!r} takes no {field}")
        return
    if value is None:
        raise ctx.fail(field, f"missing: kind {kind!r} needs a {field} "
                              f"({' | '.join(choices)})")
    if value not in choices:
        raise ctx.fail(field, f"unknown {kind} {field} {value!r} (known: {' | '.join(choices)})")


def validate_choices(mod: ModuleType, kind: str):  # noqa: ANN201
    """The ``validate_mode`` of a kind with the given MODES and FLAGS."""
    def validate_mode(ctx, mode, flag, prefix: str = "") -> None:  # noqa: ANN001
        check_choice(ctx, "mode", mode, mod.MODES, kind, prefix)
        check_choice(ctx, "flag", flag if flag or not mod.FLAGS else mod.FLAGS[0], mod.FLAGS,
                     kind, prefix)
    return validate_mode


def container_count(ctx, sc, host, where: str, single: bool = False) -> None:  # noqa: ANN001
    """Two or more containers on a lone host (one on a passthru parent, which admits no
    more); with several hosts, a host may carry none (e.g. a DHCP server's host)."""
    mine = sc.containers_of(host.name)
    if single and len(mine) > 1:
        raise ctx.fail("container", f"{host.label} on {host.name}: the parent admits exactly "
                                    f"one child, got {len(mine)}")
    least = 0 if len(sc.hosts) > 1 else 1 if single else 2
    if len(mine) < least:
        raise ctx.fail("container", f"{host.label} on {host.name}: needs at least {least} "
                                    f"container(s), got {len(mine)}")


def no_bridge(ctx, host, where: str) -> None:  # noqa: ANN001
    if host.bridge is not None:
        raise ctx.fail(f"{where}.bridge", "only the bridge kind has a host bridge")


def foreign(kind: str) -> bool:
    """Whether another program (a CNI plugin) names and creates this kind's links: they are
    the same kernel links as a native scenario's, so the benchmark and the anatomy, which
    build and rename links themselves, leave such kinds to their native twins."""
    return bool(getattr(REGISTRY[kind], "FOREIGN", False))


# the registry last: the kind modules use the helpers above
from linklab.kinds import bridge, ipvlan, macvlan, veth  # noqa: E402
from linklab.kinds import cni, netkit, veth_bpf  # noqa: E402

REGISTRY: dict[str, ModuleType] = {
    "veth": veth,
    "bridge": bridge,
    "macvlan": macvlan,
    "ipvlan": ipvlan,
    "cni": cni,
    "veth-bpf": veth_bpf,
    "netkit": netkit,
}
