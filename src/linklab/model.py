"""Declare: scenario files (TOML) loaded into frozen dataclasses, validated before anything
is built. Every error names the file and the field. The format's tables and the validator are
:mod:`linklab.format`; this module builds the dataclasses with them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from linklab import kinds  # the registry validates kind-specific fields
from linklab.checks import applicable_checks
from linklab.flows import FlowCheck, Pairs, parse_checks, parse_groups, parse_pairs
from linklab.format import (  # the format's names, long imported from here too
    ALLOWED,
    FORMAT,
    IFNAME_MAX,
    MAX_CONTAINERS,
    MTU_RANGE,
    NAME_RE,
    NODE,
    SCENARIO_NAME_RE,
    Field,
    IPAddr,
    IPIface,
    ScenarioError,
    Validator,
    fields,
    load_toml,
    parse_toml,
)

ROLES = ("host", "upstream", "remote")
# the scenarios shipped with linklab (package data; the repo's scenarios/ links here)
SHIPPED = Path(__file__).resolve().parent / "scenarios"

__all__ = ["ALLOWED", "FORMAT", "IFNAME_MAX", "MTU_RANGE", "NAME_RE", "NODE", "NODE_FIELDS",
           "ROLES", "SCENARIO_NAME_RE", "SHIPPED", "Dhcp", "Expectation", "Field", "Host",
           "IPAddr", "IPIface", "Node", "Peer", "Route", "Scenario", "ScenarioError", "fields",
           "load_all", "load_data", "load_paths", "load_scenario", "load_text", "scenario_files"]


@dataclass(frozen=True)
class Route:
    to: str                      # "default" or a prefix
    via: IPAddr | None = None
    dev: str | None = None

    @property
    def family(self) -> int:
        if self.via is not None:
            return self.via.version
        return ipaddress.ip_network(self.to).version


@dataclass(frozen=True)
class Peer:
    """The host-namespace end of a container's veth (veth and bridge kinds)."""

    ifname: str
    addrs: tuple[IPIface, ...] = ()


@dataclass(frozen=True)
class Node:
    """One namespace with one interface of interest."""

    name: str                    # logical name: host, upstream, remote, c1, ...
    ifname: str
    addrs: tuple[IPIface, ...] = ()
    routes: tuple[Route, ...] = ()
    mac: str | None = None
    peer: Peer | None = None     # containers of veth/bridge kinds
    host: str = "host"           # containers: the host namespace whose datapath they hang on

    def addr(self, family: int) -> IPIface | None:
        return next((a for a in self.addrs if a.version == family), None)


@dataclass(frozen=True)
class Host:
    """A host namespace: its parent NIC (``node``) and the datapath its containers use."""

    node: Node
    kind: str
    mode: str | None
    flag: str | None
    bridge: Node | None = None            # bridge kind: the host's bridge
    ageing_time: int | None = None        # bridge kind: seconds (0 = flood every frame)
    nftables: str | None = None           # a ruleset loaded in the host's namespace (nft -f)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def label(self) -> str:
        return "-".join(p for p in (self.kind, self.mode, self.flag) if p)


@dataclass(frozen=True)
class Expectation:
    """The expected outcome of one check, per family, with its documented reason."""

    check: str
    results: Mapping[str, str]   # family -> "pass" | "blocked" | errno name
    why: str


@dataclass(frozen=True)
class Dhcp:
    """A DHCP pool served on the LAN by a server in ``server`` (a namespace role)."""

    server: str
    pool_start: ipaddress.IPv4Address
    pool_end: ipaddress.IPv4Address
    subnet: ipaddress.IPv4Network


@dataclass(frozen=True)
class Scenario:
    name: str
    path: Path
    kind: str
    mode: str | None
    flag: str | None
    mtu: int
    description: str
    hosts: tuple[Host, ...]               # one, or several joined by the upstream switch
    upstream: Node
    remote: Node
    remote_gateway: tuple[IPIface, ...]   # upstream's addresses on the remote link
    containers: tuple[Node, ...]
    hairpin: bool = False
    dhcp: Dhcp | None = None
    expect: Mapping[str, Expectation] = field(default_factory=dict)
    cni: Mapping[str, Any] | None = None  # kind cni: [cni] (netconf, ...), see kinds/cni.py
    checks: tuple[FlowCheck, ...] = ()    # [[check]]: one per (check, family)
    pairs: Pairs | None = None            # [pairs]: every pair of containers, per probe
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # [group]

    @property
    def label(self) -> str:
        return "-".join(p for p in (self.kind, self.mode, self.flag) if p)

    @property
    def host(self) -> Node:
        """The first host's parent NIC (the only one in single-host scenarios)."""
        return self.hosts[0].node

    @property
    def bridge(self) -> Node | None:
        return self.hosts[0].bridge

    @property
    def ageing_time(self) -> int | None:
        return self.hosts[0].ageing_time

    def host_of(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def containers_of(self, host: str) -> tuple[Node, ...]:
        return tuple(c for c in self.containers if c.host == host)

    # every node by name, filled in by __post_init__: a probe asks for its two nodes and the
    # build for every container, and a scenario may hold hundreds (a scan was O(n) each)
    by_name: Mapping[str, Node] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        nodes = (*(h.node for h in self.hosts), self.upstream, self.remote, *self.containers)
        object.__setattr__(self, "by_name", {n.name: n for n in reversed(nodes)})

    @property
    def nodes(self) -> dict[str, Node]:
        """Every node by name: the hosts, upstream, remote, then the containers."""
        return {n.name: n for n in (*(h.node for h in self.hosts), self.upstream, self.remote,
                                    *self.containers)}

    def node(self, name: str) -> Node:
        return self.by_name[name]


class _Ctx(Validator):
    """The format's validator, plus the route tables of a node (which build :class:`Route`)."""

    def routes(self, data: Mapping[str, Any], where: str) -> tuple[Route, ...]:
        out = []
        for i, r in enumerate(self.typed(data, "routes", where, list, [])):
            w = f"{where}routes[{i}]"
            self.table(r, w, *fields("route"))
            to = self.typed(r, "to", w + ".", str)
            via = None
            if "via" in r:
                try:
                    via = ipaddress.ip_address(self.typed(r, "via", w + ".", str))
                except ValueError as exc:
                    raise self.fail(f"{w}.via", str(exc)) from None
                self.allowed(via, f"{w}.via", str(via))
            if to != "default":
                try:
                    net = ipaddress.ip_network(to)
                except ValueError as exc:
                    raise self.fail(f"{w}.to", str(exc)) from None
                if net.prefixlen:
                    self.allowed(net, f"{w}.to", to)
                if via is not None and via.version != net.version:
                    raise self.fail(f"{w}.via", f"{via} is not of the family of {to}")
            elif via is None:
                raise self.fail(f"{w}.via", "a 'default' route needs 'via' (or write "
                                            "'0.0.0.0/0' or '::/0' with 'dev')")
            dev = self.ifname(r["dev"], f"{w}.dev") if "dev" in r else None
            out.append(Route(to, via, dev))
        return tuple(out)


NODE_FIELDS = {"ifname", "addrs", "routes"}


def _kind_module(ctx: _Ctx, kind: Any, where: str) -> Any:
    mod = kinds.REGISTRY.get(kind) if isinstance(kind, str) else None
    if mod is None:
        raise ctx.fail(where, f"unknown kind {kind!r} (known: {', '.join(kinds.REGISTRY)})")
    return mod


def _host(ctx: _Ctx, data: Any, name: str, where: str, kind: str, mode: str | None,
          flag: str | None, named: bool) -> Host:
    """One host: its parent NIC, optional bridge, and (several hosts) its own datapath."""
    ctx.table(data, where, *fields("hosts" if named else "host"))
    w = f"{where}."
    if named:
        name = ctx.name(data["name"], f"{w}name")
        if "kind" in data:
            kind = ctx.typed(data, "kind", w, str)
            mode, flag = ctx.typed(data, "mode", w, str), ctx.typed(data, "flag", w, str)
            _kind_module(ctx, kind, f"{w}kind").validate_mode(ctx, mode, flag, prefix=w)
    bridge, ageing = None, None
    if "bridge" in data:
        b = data["bridge"]
        ctx.table(b, f"{w}bridge", *fields("bridge"))
        ageing = ctx.typed(b, "ageing_time", f"{w}bridge.", int)
        bridge = _node(ctx, {k: v for k, v in b.items() if k != "ageing_time"}, "bridge",
                       f"{w}bridge")
    nftables = ctx.typed(data, "nftables", w, str)
    node = _node(ctx, {k: v for k, v in data.items() if k not in ("bridge", "name", "kind",
                                                                  "mode", "flag", "nftables")},
                 name, where)
    return Host(node, kind, mode, flag, bridge, ageing, nftables)


def _node(ctx: _Ctx, data: Any, name: str, where: str, extra: set[str] = frozenset()) -> Node:
    ctx.table(data, where, {"ifname"}, {"addrs", "routes"} | extra)
    w = f"{where}."
    mac = ctx.typed(data, "mac", w, str) if "mac" in extra else None
    if mac is not None and not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac):
        raise ctx.fail(f"{w}mac", f"{mac!r} is not a lower-case MAC address")
    peer = None
    if "peer" in extra and "peer" in data:
        p = data["peer"]
        ctx.table(p, f"{w}peer", *fields("peer"))
        peer = Peer(ctx.ifname(p["ifname"], f"{w}peer.ifname"), ctx.addrs(p, f"{w}peer."))
    return Node(name, ctx.ifname(data["ifname"], f"{w}ifname"), ctx.addrs(data, w),
                ctx.routes(data, w), mac, peer)


def load_scenario(path: Path | str, *, require_expect: bool = True) -> Scenario:
    """Parse and validate one scenario file; raise :class:`ScenarioError` on any problem.
    ``require_expect=False`` accepts a file whose [expect] table is missing or partial
    (``linklab record`` writes it; a cell without an expectation has none)."""
    return load_data(load_toml(path), path, require_expect=require_expect)


def load_text(text: str, path: Path | str = "<inline>", *,
              require_expect: bool = True) -> Scenario:
    """Parse and validate scenario TOML given as text (``path`` names it in errors)."""
    return load_data(parse_toml(text, path), path, require_expect=require_expect)


def load_data(data: Mapping[str, Any], path: Path | str = "<inline>", *,
              require_expect: bool = True) -> Scenario:
    """Validate a scenario given as a dict (the TOML document's shape)."""
    path = Path(path)
    ctx = _Ctx(path)
    name, kind, mode, flag, mtu = _header(ctx, data, require_expect)
    hosts = _hosts(ctx, data, kind, mode, flag)
    upstream, hairpin = _upstream(ctx, data)
    remote, remote_gw = _remote(ctx, data)
    containers = _containers(ctx, data, hosts)
    host_where = ["host"] if "host" in data else [f"hosts[{i}]" for i in range(len(hosts))]
    _unique_names(ctx, hosts, containers)
    _unique_addrs(ctx, host_where, hosts, upstream, remote, remote_gw, containers)
    dhcp = _dhcp(ctx, data["dhcp"], hosts, upstream) if "dhcp" in data else None
    sc = Scenario(name=name, path=path, kind=kind, mode=mode, flag=flag, mtu=mtu,
                  description=ctx.typed(data, "description", "", str, ""), hosts=tuple(hosts),
                  upstream=upstream, remote=remote, remote_gateway=remote_gw,
                  containers=tuple(containers), hairpin=hairpin, dhcp=dhcp,
                  cni=data.get("cni"))
    for where, h in zip(host_where, hosts):
        _kind_module(ctx, h.kind, f"{where}.kind").validate(ctx, sc, h, where)
    return _with_flows(ctx, data, sc, require_expect)


def _header(ctx: _Ctx, data: Mapping[str, Any],
            require_expect: bool) -> tuple[str, str, str | None, str | None, int]:
    """The document's top-level fields: its name, kind (mode, flag) and MTU."""
    required, optional = fields("scenario")
    if not require_expect:
        required, optional = required - {"expect"}, optional | {"expect"}
    ctx.table(data, "", required, optional)
    name = data["name"]
    if not isinstance(name, str) or not SCENARIO_NAME_RE.match(name):
        raise ctx.fail("name", f"{name!r} is not a valid scenario name (lower-case letters, "
                               "digits, '-', at most 40 characters)")
    kind = ctx.typed(data, "kind", "", str)
    mode = ctx.typed(data, "mode", "", str)
    flag = ctx.typed(data, "flag", "", str)
    _kind_module(ctx, kind, "kind").validate_mode(ctx, mode, flag)
    if "cni" in data and kind != "cni":
        raise ctx.fail("cni", f"only kind 'cni' takes a [cni] table (kind is {kind!r})")
    mtu = ctx.typed(data, "mtu", "", int, 1500)
    if not MTU_RANGE[0] <= mtu <= MTU_RANGE[1]:
        raise ctx.fail("mtu", f"{mtu} is out of range {MTU_RANGE[0]}..{MTU_RANGE[1]} (IPv6 "
                              f"needs at least {MTU_RANGE[0]})")
    return name, kind, mode, flag, mtu


def _hosts(ctx: _Ctx, data: Mapping[str, Any], kind: str, mode: str | None,
           flag: str | None) -> list[Host]:
    """[host], or two or more [[hosts]]."""
    if ("host" in data) == ("hosts" in data):
        raise ctx.fail("host", "missing required field ([host], or [[hosts]] for several hosts)"
                       if "host" not in data else "give [host] or [[hosts]], not both")
    if "host" in data:
        return [_host(ctx, data["host"], "host", "host", kind, mode, flag, named=False)]
    raw_hosts = ctx.typed(data, "hosts", "", list)
    if len(raw_hosts) < 2:
        raise ctx.fail("hosts", "[[hosts]] is for several hosts: give at least 2, or use "
                                "[host]")
    return [_host(ctx, h, "", f"hosts[{i}]", kind, mode, flag, named=True)
            for i, h in enumerate(raw_hosts)]


def _upstream(ctx: _Ctx, data: Mapping[str, Any]) -> tuple[Node, bool]:
    """[upstream] and whether it hairpins."""
    up_d = data["upstream"]
    ctx.table(up_d, "upstream", *fields("upstream"))
    hairpin = ctx.typed(up_d, "hairpin", "upstream.", bool, False)
    upstream = _node(ctx, {k: v for k, v in up_d.items() if k != "hairpin"}, "upstream",
                     "upstream")
    return upstream, hairpin


def _remote(ctx: _Ctx, data: Mapping[str, Any]) -> tuple[Node, tuple[IPIface, ...]]:
    """[remote] and its gateway addresses."""
    rem_d = data["remote"]
    ctx.table(rem_d, "remote", *fields("remote"))
    gw_raw = ctx.typed(rem_d, "gateway", "remote.", list)
    remote_gw = tuple(ctx.iface_addr(a, f"remote.gateway[{i}]") for i, a in enumerate(gw_raw))
    remote = _node(ctx, {k: v for k, v in rem_d.items() if k != "gateway"}, "remote", "remote")
    return remote, remote_gw


def _containers(ctx: _Ctx, data: Mapping[str, Any], hosts: list[Host]) -> list[Node]:
    """The [[container]] tables, each on one of ``hosts`` (the first by default)."""
    raw_containers = ctx.typed(data, "container", "", list)
    if len(raw_containers) > MAX_CONTAINERS:
        raise ctx.fail("container", f"{len(raw_containers)} containers: linklab accepts at most "
                                    f"{MAX_CONTAINERS} per scenario (MAX_CONTAINERS)")
    containers = []
    for i, c in enumerate(raw_containers):
        w = f"container[{i}]"
        if not isinstance(c, Mapping):
            raise ctx.fail(w, "must be a table ([[container]])")
        ctx.table(c, w, *fields("container"))
        cname = ctx.name(c["name"], f"{w}.name")
        host_name = c.get("host", hosts[0].name)
        if not isinstance(host_name, str) or host_name not in [h.name for h in hosts]:
            raise ctx.fail(f"{w}.host", f"{host_name!r} is not one of the hosts "
                                        f"({', '.join(h.name for h in hosts)})")
        node = _node(ctx, {k: v for k, v in c.items() if k not in ("name", "host")}, cname, w,
                     set(FORMAT["container"]) - set(NODE) - {"name", "host"})
        containers.append(Node(**{**node.__dict__, "host": host_name}))
    return containers


def _unique_names(ctx: _Ctx, hosts: list[Host], containers: list[Node]) -> None:
    """No host or container takes a role's name or another node's."""
    seen: dict[str, str] = {}
    for i, h in enumerate(hosts):
        if h.name in ROLES[1:] or h.name in seen:
            raise ctx.fail(f"hosts[{i}].name", f"duplicate name {h.name!r}")
        seen[h.name] = f"hosts[{i}]"
    for i, n in enumerate(containers):
        if n.name in ROLES or n.name in seen:
            raise ctx.fail(f"container[{i}].name", f"duplicate name {n.name!r}")
        seen[n.name] = f"container[{i}]"


def _unique_addrs(ctx: _Ctx, host_where: list[str], hosts: list[Host], upstream: Node,
                  remote: Node, remote_gw: tuple[IPIface, ...], containers: list[Node]) -> None:
    """No address is given to two interfaces (peers, bridges and the remote's gateway too)."""
    addr_owner: dict[Any, str] = {}
    for where, node in [*zip(host_where, (h.node for h in hosts)), ("upstream", upstream),
                        ("remote", remote),
                        *[(f"container[{i}]", c) for i, c in enumerate(containers)],
                        *[(f"{w}.bridge", h.bridge) for w, h in zip(host_where, hosts)
                          if h.bridge]]:
        addrs = list(node.addrs) + list(node.peer.addrs if node.peer else ())
        if where == "remote":
            addrs += list(remote_gw)
        for a in addrs:
            if a.ip in addr_owner:
                raise ctx.fail(f"{where}.addrs", f"address {a.ip} is also used by "
                                                 f"{addr_owner[a.ip]}")
            addr_owner[a.ip] = where


def _dhcp(ctx: _Ctx, d: Any, hosts: list[Host], upstream: Node) -> Dhcp:
    """[dhcp]: its server (upstream or a host) and a pool inside the server's subnet."""
    ctx.table(d, "dhcp", *fields("dhcp"))
    server = ctx.typed(d, "server", "dhcp.", str)
    host_names = [h.name for h in hosts]
    if server not in ("upstream", *host_names):
        raise ctx.fail("dhcp.server", f"{server!r}: must be 'upstream' or a host "
                                      f"({', '.join(host_names)})")
    pool = ctx.typed(d, "pool", "dhcp.", list)
    if len(pool) != 2:
        raise ctx.fail("dhcp.pool", "must be [first, last] IPv4 addresses")
    try:
        lo, hi = (ipaddress.IPv4Address(p) for p in pool)
    except (ValueError, TypeError) as exc:
        raise ctx.fail("dhcp.pool", str(exc)) from None
    for p in (lo, hi):
        ctx.allowed(p, "dhcp.pool", str(p))
    srv_host = next((h for h in hosts if h.name == server), None)
    srv = (srv_host.bridge or srv_host.node) if srv_host else upstream
    srv_addr = srv.addr(4)
    if srv_addr is None or lo not in srv_addr.network or hi not in srv_addr.network:
        raise ctx.fail("dhcp.pool", f"{lo}-{hi} is not inside the server's subnet")
    return Dhcp(server, lo, hi, srv_addr.network)


def _with_flows(ctx: _Ctx, data: Mapping[str, Any], sc: Scenario,
                require_expect: bool) -> Scenario:
    """``sc`` with its [expect] cells, its own [[check]] flows and its [pairs] by [group]."""
    expect = _expectations(ctx, data.get("expect", {}), sc, require_expect)
    nodes = sc.nodes
    names = [c.name for c in sc.containers]
    checks = parse_checks(ctx, data["check"], nodes, require_expect) if "check" in data else ()
    groups = parse_groups(ctx, data["group"], names) if "group" in data else {}
    pairs = parse_pairs(ctx, data["pairs"], expect, groups, sc.containers, require_expect) \
        if "pairs" in data else None
    if groups and pairs is None:
        raise ctx.fail("group", "[group] is read by [pairs] (containers = 'same-group'): "
                                "give a [pairs] table too")
    return Scenario(**{**sc.__dict__, "expect": expect, "checks": checks, "pairs": pairs,
                       "groups": groups})


RESULTS = ("pass", "blocked")


def with_all_pairs(sc: Scenario) -> Scenario:
    """``sc`` with ``pairs = "all"`` when it has no [pairs] of its own (``--all-pairs``):
    every pair of containers probed with icmp, expected as its [expect] says of c1/c2."""
    if sc.pairs is not None or len(sc.containers) < 2 or not sc.containers[0].addrs:
        return sc
    pairs = parse_pairs(_Ctx(sc.path), "all", sc.expect, sc.groups, sc.containers,
                        require_expect=False)
    return Scenario(**{**sc.__dict__, "pairs": pairs})


def _expectations(ctx: _Ctx, raw: Any, sc: Scenario,
                  required: bool = True) -> dict[str, Expectation]:
    if not isinstance(raw, Mapping):
        raise ctx.fail("expect", "must be a table of check = { result = ..., why = ... }")
    wanted = applicable_checks(sc)          # check -> families
    out = {}
    for check, entry in raw.items():
        w = f"expect.{check}"
        if check not in wanted:
            raise ctx.fail(w, f"no such check for this scenario (applicable: "
                              f"{', '.join(wanted)})")
        families = wanted[check]
        ctx.table(entry, w, {"why"}, {"result", *families})  # FORMAT["expectation"], per cell
        why = ctx.typed(entry, "why", w + ".", str)
        results = {}
        for fam in families:
            value = entry.get(fam, entry.get("result"))
            if value is None:
                raise ctx.fail(f"{w}.{fam}", "missing: give 'result' or one per family")
            if not isinstance(value, str) or not (value in RESULTS or value.startswith("E")):
                raise ctx.fail(f"{w}.{fam}", f"{value!r}: must be 'pass', 'blocked' or an "
                                             "errno name such as 'EBUSY'")
            results[fam] = value
        out[check] = Expectation(check, results, why)
    missing = [c for c in wanted if c not in out]
    if missing and required:
        raise ctx.fail(f"expect.{missing[0]}", "missing: every cell needs an expected result "
                                                "and a reason")
    return out


def scenario_files(paths: Iterable[Path | str]) -> list[Path]:
    """The scenario files of ``paths``: a directory gives its ``*.toml`` (sorted), a file
    itself; a path that is neither is a :class:`ScenarioError`."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(p.glob("*.toml"))
        elif p.is_file():
            out.append(p)
        else:
            raise ScenarioError(p, "", "no such scenario file or directory")
    return out


def load_paths(paths: Iterable[Path | str], *, require_expect: bool = True) -> list[Scenario]:
    """Every scenario of ``paths`` (directories or files; sorted by name). A name given by
    two files is an error naming both."""
    names: dict[str, Path] = {}
    scenarios = []
    for f in dict.fromkeys(p.resolve() for p in scenario_files(paths)):
        s = load_scenario(f, require_expect=require_expect)
        if s.name in names:
            raise ScenarioError(s.path, "name", f"{s.name!r} is also the name of "
                                                f"{names[s.name]}")
        names[s.name] = s.path
        scenarios.append(s)
    return sorted(scenarios, key=lambda s: s.name)


def load_all(directory: Path | str) -> list[Scenario]:
    """Every scenario in ``directory`` (sorted by name); names must be unique."""
    return load_paths([directory])
