"""Check: which cells a scenario has, and how each is observed on a live topology.

A *cell* is (scenario, family, check). Reachability, neighbour resolution, broadcast,
multicast and MTU cells of one topology are observed together in one batch (see
:mod:`linklab.probes`): positives return as soon as their reply arrives, and every cell
expected to be blocked is watched for the same quiet period, so an isolation result costs
one wait per topology, not one per cell.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from linklab.flows import FlowCheck, pair_checks

if TYPE_CHECKING:   # the model imports this module to validate [expect]: no import circle
    from linklab.model import Scenario

# reachability paths: check -> (source node, destination node); c1/c2 are the first two
# containers, host is the parent's own address, upstream the LAN gateway.
PATHS: dict[str, tuple[str, str]] = {
    "child-to-child": ("c1", "c2"),
    "child-to-host": ("c1", "host"),
    "host-to-child": ("host", "c1"),
    "child-to-gateway": ("c1", "upstream"),
    "child-to-remote": ("c1", "remote"),
}
# the other checks' endpoints
OTHER_ENDPOINTS: dict[str, tuple[str, str]] = {
    "neigh": ("c1", "c2"), "broadcast": ("c1", "c2"), "multicast": ("c1", "c2"),
    "mtu-exact": ("c1", "upstream"), "mtu-over": ("c1", "upstream"),
    "host-netfilter": ("upstream", "c1"),   # echo requests from the LAN router to c1
}
NEEDS_TWO = {"child-to-child", "neigh", "broadcast", "multicast"}
FAMILY_CHECKS = (*PATHS, "neigh", "mtu-exact", "mtu-over", "host-netfilter")
CHECKS = (*FAMILY_CHECKS, "broadcast", "multicast", "mtu-inherit", "second-child")  # all
FAMILY_NAMES = {4: "v4", 6: "v6"}


@dataclass(frozen=True)
class Cell:
    scenario: str
    family: str        # v4 | v6 | l2 | any
    check: str
    expected: str
    why: str
    # the scenario's own checks: one flow ([[check]]) or a truth table of them ([pairs])
    flows: tuple[FlowCheck, ...] = field(default=(), compare=False, repr=False)

    @property
    def table(self) -> bool:
        """A [pairs] cell: one test for a whole truth table (source x destination)."""
        return self.check.startswith(PAIRS_PREFIX)

    @property
    def id(self) -> str:
        fam = "" if self.family == "any" else f"{self.family}-"
        return f"{self.scenario}-{fam}{self.check}"


def _roles(sc: Scenario) -> dict[str, str]:
    """Map the abstract roles c1/c2 to the scenario's first two containers and "host" to
    c1's host (with several hosts, c2 may hang on another one)."""
    roles = {"host": sc.containers[0].host if sc.containers else sc.hosts[0].name,
             "upstream": "upstream", "remote": "remote"}
    for i, c in enumerate(sc.containers[:2]):
        roles[f"c{i + 1}"] = c.name
    return roles


def endpoints(sc: Scenario, check: str) -> tuple[str, str]:
    """The real node names (source, destination) a path check runs between."""
    roles = _roles(sc)
    src, dst = PATHS.get(check) or OTHER_ENDPOINTS[check]
    return roles[src], roles[dst]


def source(sc: Scenario, cell: Cell) -> str:
    """The namespace a cell is observed from (on a split topology: the node that runs it)."""
    if cell.check == "mtu-inherit":
        return sc.containers[0].name
    if cell.check == "second-child":
        return next(h.name for h in sc.hosts if h.mode == "passthru")
    return endpoints(sc, cell.check)[0]


def applicable_checks(sc: Scenario) -> dict[str, tuple[str, ...]]:
    """check -> the families it runs in, for this scenario's shape."""
    if not sc.containers or not sc.containers[0].addrs:
        return {}                 # address-less containers (DHCP scenarios): no matrix
    two = len(sc.containers) >= 2
    out: dict[str, tuple[str, ...]] = {}
    for check in FAMILY_CHECKS:
        if check in NEEDS_TWO and not two:
            continue
        src, dst = endpoints(sc, check)
        fams = tuple(FAMILY_NAMES[f] for f in (4, 6)
                     if sc.node(src).addr(f) is not None and sc.node(dst).addr(f) is not None)
        if fams:
            out[check] = fams
    if two and sc.containers[0].addr(4) is not None:
        out["broadcast"] = ("v4",)
    if two:
        out["multicast"] = ("l2",)
    out["mtu-inherit"] = ("any",)
    if any(h.kind == "macvlan" and h.mode == "passthru" for h in sc.hosts):
        out["second-child"] = ("any",)
    return out


UNSET = "unset"   # a cell without an expectation (``linklab record``, ``linklab_topology``)
PAIRS_PREFIX = "pairs-"
TABLE = "truth-table"   # the expected result of a [pairs] cell: each pair's, in its flows


def cells(sc: Scenario) -> list[Cell]:
    """Every cell of the scenario, in a stable order, with its expectation (``UNSET`` where a
    scenario loaded with ``require_expect=False`` gives none)."""
    out = []
    for check, families in applicable_checks(sc).items():
        exp = sc.expect.get(check)
        for fam in families:
            out.append(Cell(sc.name, fam, check, exp.results[fam] if exp else UNSET,
                            exp.why if exp else ""))
    for fc in sc.checks:
        out.append(Cell(sc.name, fc.family, fc.flow.name, fc.expected, fc.why, (fc,)))
    if sc.pairs is not None:
        nodes = sc.by_name
        for probe in sc.pairs.probes:
            for fam in sc.pairs.families:
                flows = tuple(pair_checks(sc.pairs, nodes, sc.containers, sc.groups, sc.checks,
                                          fam, probe))
                if flows:
                    n = sum(fc.expected == "pass" for fc in flows)
                    out.append(Cell(sc.name, fam, f"{PAIRS_PREFIX}{probe.name}", TABLE,
                                    f"{len(flows)} pairs: {n} expected to pass, "
                                    f"{len(flows) - n} blocked", flows))
    return out


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"E{code}")
