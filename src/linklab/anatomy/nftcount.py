"""Netfilter hook counting: one nft table per family (inet, bridge) in each namespace of the
topology, with a counting chain per hook, present only while a measurement runs.

Each probe packet has a length of its own (:mod:`linklab.anatomy.probe`), so one rule per
probe and hook counts how often that packet crossed the hook: ``meta length`` is the packet's
length from its network header at every inet and bridge hook. The rule matches echo requests
and replies only: an ICMPv6 error quotes the packet that caused it (40 + 8 bytes more, inside
the next probe's 32-byte range), e.g. "address unreachable" for a request whose neighbour
never answered, ~3 s after it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager

from linklab.cmd import NamespaceLike, cmd, require

TABLE = "linklab_anatomy"
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
FAMILIES = ("inet", "bridge")
PRIORITY = -400      # before every other chain, so a later drop rule cannot hide a crossing
ECHO = {"v4": "icmp type { echo-request, echo-reply }",
        "v6": "icmpv6 type { echo-request, echo-reply }"}


def ruleset(family: str, probes: Mapping[str, tuple[int, int, str]]) -> str:
    """The counting table of ``family``: per hook, one counter per probe (length range, IP
    family v4 | v6: its echoes only)."""
    lines = [f"table {family} {TABLE} {{"]
    for hook in HOOKS:
        lines.append(f" chain {hook} {{")
        lines.append(f"  type filter hook {hook} priority {PRIORITY}; policy accept;")
        for probe, (lo, hi, fam) in probes.items():
            lines.append(f'  meta length {lo}-{hi} {ECHO[fam]} counter comment "{probe}"')
        lines.append(" }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def parse_counters(text: str) -> dict[tuple[str, str, str], int]:
    """(family, hook, probe) -> packets from ``nft -j list ruleset`` (our table only)."""
    out: dict[tuple[str, str, str], int] = {}
    for item in json.loads(text or "{}").get("nftables", []):
        rule = item.get("rule")
        if not rule or rule.get("table") != TABLE or "comment" not in rule:
            continue
        packets = next((e["counter"]["packets"] for e in rule["expr"] if "counter" in e), 0)
        out[(rule["family"], rule["chain"], rule["comment"])] = packets
    return out


class Counting:
    """Counting tables in a set of namespaces; :meth:`read` returns the crossings."""

    def __init__(self, namespaces: Mapping[str, NamespaceLike]) -> None:
        self.namespaces = dict(namespaces)
        self.nft = require("nft", "nftables")

    def read(self) -> dict[str, dict[tuple[str, str, str], int]]:
        """namespace -> (family, hook, probe) -> packets."""
        return {name: parse_counters(cmd([self.nft, "-j", "list", "ruleset"], ns=ns,
                                         timeout=30).stdout)
                for name, ns in self.namespaces.items()}


@contextmanager
def counting(namespaces: Mapping[str, NamespaceLike],
             probes: Mapping[str, tuple[int, int, str]]) -> Iterator[Counting]:
    """Install the counting tables in every namespace; delete them (LIFO) on exit."""
    c = Counting(namespaces)
    with ExitStack() as stack:
        for ns in c.namespaces.values():
            for family in FAMILIES:
                cmd([c.nft, "-f", "-"], ns=ns, input=ruleset(family, probes), timeout=30)
                stack.callback(_delete, c.nft, ns, family)
        yield c


def _delete(nft: str, ns: NamespaceLike, family: str) -> None:
    cmd([nft, "delete", "table", family, TABLE], ns=ns, timeout=30)


def tables_present(ns: NamespaceLike) -> list[str]:
    """Our counting tables still present in ``ns`` (for tests: none after a measurement)."""
    out = cmd([require("nft", "nftables"), "-j", "list", "tables"], ns=ns, timeout=30).stdout
    return [f"{t['table']['family']} {t['table']['name']}"
            for t in json.loads(out or "{}").get("nftables", [])
            if "table" in t and t["table"]["name"] == TABLE]


def hooks_crossed(counters: Mapping[str, Mapping[tuple[str, str, str], int]], probe: str,
                  order: Sequence[str]) -> list[tuple[str, str, str, int]]:
    """(namespace, family, hook, packets) this probe crossed, namespaces in ``order``."""
    out = []
    for ns in order:
        for (family, hook, p), n in counters.get(ns, {}).items():
            if p == probe and n:
                out.append((ns, family, hook, n))
    return out
