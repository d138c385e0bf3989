"""What anatomy measures: a live datapath with interface names unique to the run, and its cells.

Interface names in scenarios repeat across namespaces (every container has an ``eth0``, and
so has the machine), but a tracepoint reports only the device *name*. Anatomy therefore builds
each scenario with its interfaces renamed to ``a<marker><n>`` (unique on the machine while the
run lives), which attributes every tracepoint hit to one namespace and ignores the machine's own
devices. Everything else is the scenario as shipped, so any kind in the registry is covered.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from linklab import kinds
from linklab.build import NS_SYSCTLS, REMOTE_PORT, build, uplink_port
from linklab.checks import FAMILY_NAMES, PATHS, applicable_checks, endpoints
from linklab.model import Node, Scenario, load_all
from linklab.netns import NetNS
from linklab.ownership import Run

# the checks anatomy traces (the reachability paths of the matrix), and the ones bench prints
CHECKS: tuple[str, ...] = tuple(PATHS)
MAIN_CHECKS = ("child-to-child", "child-to-remote", "host-to-child")
VETH_PAIR = "veth-pair"
PAIR_ADDRS = {4: ("198.18.254.1/24", "198.18.254.2/24"),
              6: ("2001:db8:0:fe::1/64", "2001:db8:0:fe::2/64")}


@dataclass(frozen=True)
class Cell:
    """One traced path: a check in one family, between two logical namespaces."""

    check: str
    family: str          # v4 | v6
    src: str
    dst: str
    expected: str        # the matrix expectation of the round trip
    why: str = ""


@dataclass
class Target:
    """A live datapath: its namespaces, addresses, devices (renamed -> 'ns/original') and cells."""

    name: str
    kind: str
    mode: str
    flag: str
    namespaces: dict[str, NetNS]
    addrs: dict[tuple[str, int], str]          # (namespace, family) -> address
    devices: dict[str, str]                    # unique device name -> "namespace/ifname"
    cells: list[Cell] = field(default_factory=list)
    shared: frozenset[str] = frozenset()       # names other runs' namespaces also use

    def ns(self, name: str) -> NetNS:
        return self.namespaces[name]


def scenario_datapaths(scenario_dir: Path | str) -> list[Scenario]:
    """Every scenario with reachability cells (any kind in the registry whose links linklab
    builds itself: it renames their interfaces)."""
    return [sc for sc in load_all(scenario_dir)
            if not kinds.foreign(sc.kind) and any(c in PATHS for c in applicable_checks(sc))]


def renamed(sc: Scenario, prefix: str) -> tuple[Scenario, dict[str, str]]:
    """``sc`` with every interface it declares renamed ``<prefix><n>``; and new name ->
    'namespace/original name' (the fixed upstream ports included)."""
    names: dict[str, str] = {}
    counter = iter(range(100))

    def new(ns: str, ifname: str) -> str:
        name = f"{prefix}{next(counter):02d}"
        names[name] = f"{ns}/{ifname}"
        return name

    def node(n: Node, ns: str | None = None) -> Node:
        own = new(ns or n.name, n.ifname)
        mapping = {n.ifname: own}
        peer = None
        if n.peer is not None:
            peer = replace(n.peer, ifname=new(n.host, n.peer.ifname))
        routes = tuple(replace(r, dev=mapping.get(r.dev, r.dev)) if r.dev else r
                       for r in n.routes)
        return replace(n, ifname=own, peer=peer, routes=routes)

    hosts = []
    for h in sc.hosts:
        bridge = node(h.bridge, h.name) if h.bridge is not None else None
        hosts.append(replace(h, node=node(h.node), bridge=bridge))
    out = replace(sc, hosts=tuple(hosts), upstream=node(sc.upstream), remote=node(sc.remote),
                  containers=tuple(node(c) for c in sc.containers))
    for h in sc.hosts:
        names[uplink_port(h.name)] = f"upstream/{uplink_port(h.name)}"
    names[REMOTE_PORT] = f"upstream/{REMOTE_PORT}"
    return out, names


def scenario_cells(sc: Scenario, checks: tuple[str, ...] = CHECKS,
                   families: tuple[str, ...] = ("v4", "v6")) -> list[Cell]:
    out = []
    for check, fams in applicable_checks(sc).items():
        if check not in checks:
            continue
        src, dst = endpoints(sc, check)
        exp = sc.expect[check]
        out.extend(Cell(check, fam, src, dst, exp.results[fam], exp.why)
                   for fam in fams if fam in families)
    out.sort(key=lambda c: (checks.index(c.check), c.family))
    return out


@contextmanager
def open_scenario(sc: Scenario, run: Run, checks: tuple[str, ...] = CHECKS,
                  families: tuple[str, ...] = ("v4", "v6")) -> Iterator[Target]:
    """Build ``sc`` with run-unique interface names; yield it as a :class:`Target`."""
    live, devices = renamed(sc, f"a{run.marker}")
    with build(live, run) as topo:
        addrs = {}
        for name in topo.namespaces:
            for fam in (4, 6):
                try:
                    addrs[(name, fam)] = str(topo.addr(name, fam))
                except KeyError:
                    pass
        flag = sc.flag or ("hairpin" if sc.hairpin else "")
        fixed = frozenset(n for n in devices if not n.startswith(f"a{run.marker}"))
        yield Target(sc.name, sc.kind, sc.mode or "", flag, dict(topo.namespaces), addrs,
                     devices, scenario_cells(sc, checks, families), fixed)


@contextmanager
def open_veth_pair(run: Run, families: tuple[str, ...] = ("v4", "v6")) -> Iterator[Target]:
    """The reference: two namespaces joined by one veth pair (c1 <-> c2, child-to-child)."""
    with ExitStack() as stack:
        spaces: dict[str, NetNS] = {}
        for logical in ("c1", "c2"):
            name = run.ns_name(f"an-{logical}")
            run.own_namespace(name)
            ns = NetNS(name)

            def release(ns: NetNS = ns, name: str = name) -> None:
                ns.close()
                run.disown_namespace(name)

            stack.callback(release)
            spaces[logical] = ns
            for key, value in NS_SYSCTLS.items():
                ns.sysctl(key, value)
            ns.ipr.link("set", index=1, state="up")
        a, b = f"a{run.marker}p1", f"a{run.marker}p2"
        spaces["c1"].ipr.link("add", ifname=a, kind="veth", mtu=1400,
                              peer={"ifname": b, "net_ns_fd": spaces["c2"].fd, "mtu": 1400})
        addrs: dict[tuple[str, int], str] = {}
        for (logical, ns), dev in zip(spaces.items(), (a, b)):
            index = ns.ipr.link_lookup(ifname=dev)[0]
            ns.ipr.link("set", index=index, state="up")
            for fam, pair in PAIR_ADDRS.items():
                iface = ipaddress.ip_interface(pair[0 if logical == "c1" else 1])
                ns.ipr.addr("add", index=index, address=str(iface.ip),
                            prefixlen=iface.network.prefixlen, **({"flags": 0x02} if fam == 6
                                                                 else {}))
                addrs[(logical, fam)] = str(iface.ip)
        cells = [Cell("child-to-child", fam, "c1", "c2", "pass", "one veth pair")
                 for fam in families]
        yield Target(VETH_PAIR, VETH_PAIR, "", "", spaces, addrs,
                     {a: "c1/eth0", b: "c2/eth0"}, cells)


def family_number(fam: str) -> int:
    return next(n for n, name in FAMILY_NAMES.items() if name == fam)
