"""Declare: the scenario's own checks — ``[[check]]`` (one flow: from, to, proto, port) and
``[pairs]`` (every ordered pair of containers, and each container to its host, the gateway and
the remote, per probe) with expectations per pair or per ``[group]`` — validated into frozen
data and expanded into :class:`FlowCheck` s, each observed by a real probe (:mod:`linklab.probes`).

A leaf beside :mod:`linklab.format`: the model parses with it, :mod:`linklab.checks` turns its
flow checks into cells.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from linklab.format import MAX_PAIRS, Validator, fields

if TYPE_CHECKING:   # the model imports this module to parse: no import circle
    from linklab.model import Expectation, Node

PROTOS = ("icmp", "tcp", "udp")
RESULTS = ("pass", "blocked")
GROUP_RULE = "same-group"
FAMILIES = ("v4", "v6")
# [pairs] rule -> the fixed check whose [expect] entry it defaults to (c1/c2 generalised)
PAIR_RULES: dict[str, str] = {"containers": "child-to-child", "host": "child-to-host",
                              "gateway": "child-to-gateway", "remote": "child-to-remote"}
UNSET = "unset"   # as linklab.checks.UNSET: observed, never asserted (``linklab record``)


@dataclass(frozen=True)
class Flow:
    """What one probe sends: from a node's namespace to another node's address."""

    src: str
    dst: str
    proto: str             # icmp | tcp | udp
    port: int | None = None

    @property
    def probe(self) -> str:
        """``icmp``, ``tcp-80``: the probe's part of a check name."""
        return self.proto if self.port is None else f"{self.proto}-{self.port}"

    @property
    def name(self) -> str:
        """The check name: ``c3-to-c1-tcp-80``."""
        return f"{self.src}-to-{self.dst}-{self.probe}"


@dataclass(frozen=True)
class FlowCheck:
    """One flow in one family with its expected result and reason."""

    flow: Flow
    family: str            # v4 | v6
    expected: str          # pass | blocked | unset
    why: str
    origin: str = "check"  # check ([[check]]) | pairs


@dataclass(frozen=True)
class Probe:
    """A ``[pairs]`` probe: ``icmp``, ``tcp:80`` or ``udp:53``."""

    proto: str
    port: int | None = None

    @property
    def name(self) -> str:
        return self.proto if self.port is None else f"{self.proto}-{self.port}"


@dataclass(frozen=True)
class Pairs:
    """``[pairs]``: probe every ordered pair of containers and each container to its host,
    the gateway and the remote. ``rules``: destination class (containers | host | gateway |
    remote) -> family -> expected result (pass | blocked | same-group | unset)."""

    probes: tuple[Probe, ...]
    families: tuple[str, ...]
    rules: Mapping[str, Mapping[str, str]]
    whys: Mapping[str, str]


def parse_probe(ctx: Validator, value: Any, where: str) -> Probe:
    """``icmp`` | ``tcp:PORT`` | ``udp:PORT``."""
    if not isinstance(value, str):
        raise ctx.fail(where, f"must be a string such as 'icmp', 'tcp:80' or 'udp:53', got "
                              f"{value!r}")
    proto, _, port = value.partition(":")
    if proto not in PROTOS:
        raise ctx.fail(where, f"{value!r}: unknown protocol {proto!r} (known: "
                              f"{' | '.join(PROTOS)})")
    return Probe(proto, _port(ctx, proto, port or None, where))


def _port(ctx: Validator, proto: str, port: Any, where: str) -> int | None:
    if proto == "icmp":
        if port is not None:
            raise ctx.fail(where, "icmp takes no port")
        return None
    if port is None:
        raise ctx.fail(where, f"{proto} needs a port (write 'NODE:PORT')")
    try:
        value = int(port)
    except (TypeError, ValueError):
        raise ctx.fail(where, f"port {port!r} is not a number") from None
    if not 1 <= value <= 65535:
        raise ctx.fail(where, f"port {value} is out of range 1..65535")
    return value


def _node_names(nodes: Mapping[str, Node]) -> str:
    names = list(nodes)
    return ", ".join(names) if len(names) <= 12 else \
        f"{', '.join(names[:10])}, … ({len(names)} nodes)"


def _families(ctx: Validator, nodes: Mapping[str, Node], src: str, dst: str, given: Any,
              where: str) -> tuple[str, ...]:
    have = tuple(f for f, v in zip(FAMILIES, (4, 6))
                 if nodes[src].addr(v) is not None and nodes[dst].addr(v) is not None)
    if given is None:
        if not have:
            raise ctx.fail(where, f"{src} and {dst} share no address family")
        return have
    if given not in FAMILIES:
        raise ctx.fail(f"{where}.family", f"{given!r}: must be 'v4' or 'v6'")
    if given not in have:
        missing = src if nodes[src].addr(4 if given == "v4" else 6) is None else dst
        raise ctx.fail(f"{where}.family", f"{missing} has no IPv{given[1]} address")
    return (given,)


def parse_checks(ctx: Validator, raw: Any, nodes: Mapping[str, Node],
                 require_expect: bool = True) -> tuple[FlowCheck, ...]:
    """The ``[[check]]`` tables: one :class:`FlowCheck` per (check, family)."""
    if not isinstance(raw, list):
        raise ctx.fail("check", "must be an array of tables ([[check]])")
    required, optional = fields("check")
    if not require_expect:
        required, optional = required - {"expect", "why"}, optional | {"expect", "why"}
    out: list[FlowCheck] = []
    seen: dict[tuple[str, str], str] = {}
    for i, c in enumerate(raw):
        w = f"check[{i}]"
        ctx.table(c, w, required, optional)
        src = ctx.typed(c, "from", f"{w}.", str)
        if src not in nodes:
            raise ctx.fail(f"{w}.from", f"no node {src!r} (nodes: {_node_names(nodes)})")
        to = ctx.typed(c, "to", f"{w}.", str)
        dst, _, port = to.partition(":")
        if dst not in nodes:
            raise ctx.fail(f"{w}.to", f"no node {dst!r} (nodes: {_node_names(nodes)})")
        if dst == src:
            raise ctx.fail(f"{w}.to", f"{dst!r} is the check's own source")
        proto = ctx.typed(c, "proto", f"{w}.", str, "icmp")
        if proto not in PROTOS:
            raise ctx.fail(f"{w}.proto", f"{proto!r}: must be {' | '.join(PROTOS)}")
        flow = Flow(src, dst, proto, _port(ctx, proto, port or None, f"{w}.to"))
        expect = ctx.typed(c, "expect", f"{w}.", str, UNSET)
        if expect not in (*RESULTS, UNSET) or (expect == UNSET and "expect" in c):
            raise ctx.fail(f"{w}.expect", f"{expect!r}: must be 'pass' or 'blocked'")
        why = ctx.typed(c, "why", f"{w}.", str, "")
        for fam in _families(ctx, nodes, src, dst, c.get("family"), w):
            if (fam, flow.name) in seen:
                raise ctx.fail(w, f"{flow.name} ({fam}) is also declared by "
                                  f"{seen[(fam, flow.name)]}")
            seen[(fam, flow.name)] = w
            out.append(FlowCheck(flow, fam, expect, why))
    return tuple(out)


def parse_groups(ctx: Validator, raw: Any, containers: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``[group]``: group name -> its containers; a container is in one group at most."""
    if not isinstance(raw, Mapping):
        raise ctx.fail("group", "must be a table of name = [container, ...]")
    known = set(containers)
    owner: dict[str, str] = {}
    out = {}
    for name, members in raw.items():
        w = f"group.{name}"
        ctx.name(name, w)
        if not isinstance(members, list) or not members:
            raise ctx.fail(w, "must be a non-empty list of container names")
        for j, m in enumerate(members):
            if m not in known:
                raise ctx.fail(f"{w}[{j}]", f"no container {m!r}")
            if m in owner:
                raise ctx.fail(f"{w}[{j}]", f"{m!r} is also in group {owner[m]!r}")
            owner[m] = name
        out[name] = tuple(members)
    return out


def parse_pairs(ctx: Validator, raw: Any, expect: Mapping[str, Expectation],
                groups: Mapping[str, tuple[str, ...]], containers: Sequence[Node],
                require_expect: bool = True) -> Pairs:
    """``pairs = "all"`` (icmp, every rule from [expect]) or a ``[pairs]`` table. A rule not
    given takes the fixed matrix's expectation of c1/c2 (``containers`` <- child-to-child,
    ``host`` <- child-to-host, ...): the first two containers' behaviour, generalised."""
    if raw == "all":
        raw = {}
    elif not isinstance(raw, Mapping):
        raise ctx.fail("pairs", f"must be \"all\" or a table ([pairs]), got {raw!r}")
    ctx.table(raw, "pairs", *fields("pairs"))
    probes_raw = ctx.typed(raw, "probes", "pairs.", list, ["icmp"])
    probes = tuple(dict.fromkeys(parse_probe(ctx, p, f"pairs.probes[{i}]")
                                 for i, p in enumerate(probes_raw)))
    if not probes:
        raise ctx.fail("pairs.probes", "give at least one probe ('icmp', 'tcp:80', ...)")
    fams = ctx.typed(raw, "families", "pairs.", list, list(FAMILIES))
    for i, f in enumerate(fams):
        if f not in FAMILIES:
            raise ctx.fail(f"pairs.families[{i}]", f"{f!r}: must be 'v4' or 'v6'")
    why = ctx.typed(raw, "why", "pairs.", str, "")
    rules: dict[str, dict[str, str]] = {}
    whys: dict[str, str] = {}
    for rule, check in PAIR_RULES.items():
        if rule in raw:
            value = ctx.typed(raw, rule, "pairs.", str)
            allowed = (*RESULTS, GROUP_RULE) if rule == "containers" else RESULTS
            if value not in allowed:
                raise ctx.fail(f"pairs.{rule}", f"{value!r}: must be {' | '.join(allowed)}")
            if not why:
                raise ctx.fail("pairs.why", f"missing: pairs.{rule} needs a reason")
            rules[rule] = {f: value for f in FAMILIES}
            whys[rule] = why
        elif check in expect:
            rules[rule] = {f: r if r in RESULTS else "blocked"
                           for f, r in expect[check].results.items()}
            whys[rule] = f"as {check}: {expect[check].why}"
        elif require_expect and (rule != "containers" or len(containers) > 1):
            raise ctx.fail(f"pairs.{rule}", f"missing: give pairs.{rule} = \"pass\" | "
                                            f"\"blocked\" (or [expect] {check})")
        else:
            rules[rule] = {f: UNSET for f in FAMILIES}
            whys[rule] = ""
    if GROUP_RULE in rules.get("containers", {}).values():
        if not groups:
            raise ctx.fail("pairs.containers", "'same-group' needs a [group] table")
        grouped = {m for ms in groups.values() for m in ms}
        lone = [c.name for c in containers if c.name not in grouped]
        if lone:
            raise ctx.fail("group", f"container {lone[0]!r} is in no group (pairs.containers "
                                    "= 'same-group' needs every container in one)")
    # the families asked for that some container has
    families = tuple(f for f in FAMILIES if f in fams
                     and any(c.addr(4 if f == "v4" else 6) for c in containers))
    n = len(containers)
    count = n * (n - 1 + 3) * len(probes) * len(families)   # at most: a family may be missing
    if count > MAX_PAIRS:
        raise ctx.fail("pairs", f"{count:,} pairs ({n} containers x {n + 2} destinations x "
                                f"{len(probes)} probes x {len(families)} families): linklab "
                                f"checks at most {MAX_PAIRS:,} per scenario (MAX_PAIRS); give "
                                "fewer probes or families")
    return Pairs(probes, families, rules, whys)


def _family_ok(a: Node, b: Node, fam: str) -> bool:
    v = 4 if fam == "v4" else 6
    return a.addr(v) is not None and b.addr(v) is not None


def pair_checks(pairs: Pairs, nodes: Mapping[str, Node], containers: Sequence[Node],
                groups: Mapping[str, tuple[str, ...]], declared: Sequence[FlowCheck],
                family: str, probe: Probe) -> Iterator[FlowCheck]:
    """Every pair's :class:`FlowCheck` of one family and probe, sources in file order,
    destinations: the other containers, then the source's host, the gateway and the remote.
    A ``[[check]]`` of the same flow and family gives that pair's expectation."""
    group_of = {m: g for g, ms in groups.items() for m in ms}
    override = {(fc.family, fc.flow): fc for fc in declared}
    for c in containers:
        dests = [(d.name, "containers") for d in containers if d.name != c.name]
        dests += [(c.host, "host"), ("upstream", "gateway"), ("remote", "remote")]
        for dst, rule in dests:
            if not _family_ok(c, nodes[dst], family):
                continue
            flow = Flow(c.name, dst, probe.proto, probe.port)
            if (fc := override.get((family, flow))) is not None:
                yield FlowCheck(flow, family, fc.expected, fc.why, "pairs")
                continue
            expected = pairs.rules[rule][family]
            why = pairs.whys[rule]
            if expected == GROUP_RULE:
                same = group_of[c.name] == group_of[dst]
                expected = "pass" if same else "blocked"
                why = f"{why} ({'same group' if same else 'other group'})"
            yield FlowCheck(flow, family, expected, why, "pairs")
