"""A live topology for your own tests and for the CLI: run an argv in a node's namespace,
read a node's addresses, observe one check. It wraps :class:`linklab.build.Topology` (which
owns the namespaces) and never outlives it."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from linklab.build import Topology
from linklab.checks import Cell, cells
from linklab.cmd import Result, bkg, cmd
from linklab.model import (
    SHIPPED,
    IPIface,
    Scenario,
    ScenarioError,
    load_data,
    load_paths,
    load_scenario,
    load_text,
)
from linklab.netns import NetNS
from linklab.probes import SPECIAL, Observation, flow_key, netfilter_drop, observe

# what a test may hand to linklab_topology: a scenario name, a path, TOML text or a dict
Source = str | Path | Mapping[str, Any] | Scenario


def scenario_from(source: Source, paths: Iterable[Path | str] = (SHIPPED,)) -> Scenario:
    """Load ``source``: a :class:`Scenario`, a dict (the TOML document's shape), TOML text,
    a path to a ``.toml`` file, or the name of a scenario found in ``paths``. [expect] may be
    missing or partial (a cell without an expectation is observed, never asserted)."""
    if isinstance(source, Scenario):
        return source
    if isinstance(source, Mapping):
        return load_data(source, "<dict>", require_expect=False)
    if isinstance(source, Path):
        return load_scenario(source, require_expect=False)
    if "\n" in source or "=" in source:
        return load_text(source, "<inline>", require_expect=False)
    if source.endswith(".toml") or "/" in source:
        return load_scenario(source, require_expect=False)
    paths = list(paths)
    found = {s.name: s for s in load_paths(paths, require_expect=False)}
    if source not in found:
        raise ScenarioError(source, "", f"no scenario of that name in "
                                        f"{', '.join(map(str, paths))} (known: "
                                        f"{', '.join(sorted(found))})")
    return found[source]


class LiveTopology:
    """One built scenario: its nodes' namespaces, commands inside them, observations."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.scenario = topo.scenario
        self.cells: list[Cell] = cells(topo.scenario)

    @property
    def nodes(self) -> list[str]:
        """Logical node names: upstream, remote, the hosts, then the containers."""
        return list(self.topo.namespaces)

    def ns(self, node: str) -> NetNS:
        """The namespace of ``node`` (KeyError naming the known nodes)."""
        try:
            return self.topo.ns(node)
        except KeyError:
            raise KeyError(f"{self.scenario.name}: no node {node!r} (nodes: "
                           f"{', '.join(self.nodes)})") from None

    def exec(self, node: str, argv: Sequence[str], *, timeout: float = 60, check: bool = True,
             input: str | None = None) -> Result:
        """Run ``argv`` inside ``node``'s namespace and wait (``linklab.cmd.cmd``)."""
        return cmd(argv, ns=self.ns(node), timeout=timeout, check=check, input=input)

    @contextmanager
    def bkg(self, node: str, argv: Sequence[str], **kw: Any) -> Iterator[Any]:
        """A background process in ``node``'s namespace, owned by the run and stopped by PID
        on exit (``linklab.cmd.bkg``)."""
        with bkg(argv, ns=self.ns(node), owner=self.topo.run, **kw) as proc:
            yield proc

    def addrs(self, node: str, family: int | None = None) -> list[IPIface]:
        """The global addresses the kernel holds on ``node``'s interface (IPv4 or IPv6 only
        with ``family``), read live: what DHCP or a test added shows up too."""
        ifname = self.topo.ifname(node)
        ipr = self.ns(node).ipr
        out = []
        for msg in ipr.get_addr(index=self.topo.index(node, ifname)):
            iface = ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            if iface.is_link_local or (family and iface.version != family):
                continue
            out.append(iface)
        return out

    def addr(self, node: str, family: int = 4) -> str:
        """The node's declared address of ``family``, as a string ready for an argv."""
        return str(self.topo.addr(node, family))

    def cell(self, check: str, family: str = "v4") -> Cell:
        """The cell (check, family) of this scenario (ValueError listing the applicable)."""
        fam = family if any(c.check == check and c.family == family for c in self.cells) \
            else next((c.family for c in self.cells if c.check == check
                       and c.family in ("any", "l2")), family)
        for c in self.cells:
            if c.check == check and c.family == fam:
                return c
        raise ValueError(f"{self.scenario.name}: no cell {check} {family} (applicable: "
                         f"{', '.join(c.id for c in self.cells)})")

    def observe(self, check: str, family: str = "v4") -> Observation:
        """What the kernel does for one cell now: ``pass``, ``blocked`` or an errno name."""
        cell = self.cell(check, family)
        if cell.check in SPECIAL:
            return SPECIAL[cell.check](self.topo)
        if cell.flows:        # the scenario's own checks: [[check]] or a [pairs] table
            seen = observe(self.topo, [], cell.flows)
            if not cell.table:
                return seen[flow_key(cell.flows[0])]
            wrong = [fc.flow.name for fc in cell.flows
                     if seen[flow_key(fc)].result != fc.expected]
            return Observation("mismatch" if wrong else cell.expected,
                               f"mismatched: {', '.join(wrong)}" if wrong else "")
        if cell.check == "host-netfilter":
            with netfilter_drop(self.topo):
                return observe(self.topo, [cell])[cell.id]
        return observe(self.topo, [cell])[cell.id]

    def describe(self) -> list[str]:
        """One line per namespace: node, namespace name, interfaces with their addresses."""
        lines = []
        for node, ns in self.topo.namespaces.items():
            ifaces = []
            for link in ns.ipr.get_links():
                name = link.get_attr("IFLA_IFNAME")
                addrs = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                         for a in ns.ipr.get_addr(index=link["index"])
                         if a["scope"] == 0]     # global only
                state = "up" if link["flags"] & 1 else "down"
                ifaces.append(f"{name} {state}" + (f" {' '.join(addrs)}" if addrs else ""))
            lines.append(f"{node:<10} {ns.name:<20} " + "; ".join(ifaces))
        return lines


def tcp_port_open(live: LiveTopology, node: str, host: str, port: int,
                  timeout_s: float = 1.0) -> bool:
    """Does a TCP connect from ``node``'s namespace to ``host``:``port`` succeed?"""
    with live.ns(node).enter():
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        sock.settimeout(timeout_s)
        return sock.connect_ex((host, port)) == 0
    finally:
        sock.close()
