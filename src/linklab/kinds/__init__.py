"""The datapath registry: one module per link kind.

A kind module provides ``MODES``/``FLAGS`` (empty when it has none), ``HOST_FORWARDS``,
``validate_mode(ctx, mode, flag)``, ``validate(ctx, scenario)``, ``prepare(topo)`` (kind-wide
objects such as a bridge), ``attach(topo, container)`` (the container's link) and
``probe(nl, parent_index, mode, flag)`` used by the capability table. Adding a datapath is
adding one module and one line below.
"""

from __future__ import annotations

from types import ModuleType

from linklab.kinds import bridge, ipvlan, macvlan, veth

REGISTRY: dict[str, ModuleType] = {
    "veth": veth,
    "bridge": bridge,
    "macvlan": macvlan,
    "ipvlan": ipvlan,
}


def check_choice(ctx, field: str, value: str | None, choices: tuple[str, ...],  # noqa: ANN001
                 kind: str) -> None:
    """Validate an enumerated field (mode, flag) against the kind's choices."""
    if not choices:
        if value is not None:
            raise ctx.fail(field, f"kind {kind!r} takes no {field}")
        return
    if value is None:
        raise ctx.fail(field, f"missing: kind {kind!r} needs a {field} "
                              f"({' | '.join(choices)})")
    if value not in choices:
        raise ctx.fail(field, f"unknown {kind} {field} {value!r} (known: {' | '.join(choices)})")
