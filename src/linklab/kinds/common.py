"""What the kind modules share: validating an enumerated mode or flag, counting a host's
containers, refusing a bridge table. A leaf: the kind modules import it, and the registry
(:mod:`linklab.kinds`) imports the kind modules."""

from __future__ import annotations

from types import ModuleType


def check_choice(ctx, field: str, value: str | None, choices: tuple[str, ...],
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


def validate_choices(mod: ModuleType, kind: str):
    """The ``validate_mode`` of a kind with the given MODES and FLAGS."""
    def validate_mode(ctx, mode, flag, prefix: str = "") -> None:
        check_choice(ctx, "mode", mode, mod.MODES, kind, prefix)
        check_choice(ctx, "flag", flag if flag or not mod.FLAGS else mod.FLAGS[0], mod.FLAGS,
                     kind, prefix)
    return validate_mode


def container_count(ctx, sc, host, where: str, single: bool = False) -> None:
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


def no_bridge(ctx, host, where: str) -> None:
    """Only the bridge kind takes a host bridge table."""
    if host.bridge is not None:
        raise ctx.fail(f"{where}.bridge", "only the bridge kind has a host bridge")
