"""Build: turn a :class:`~linklab.model.Scenario` into live namespaces and links.

Every object is created directly in its target namespace with pyroute2 netlink, in-process.
Namespaces are the owners: each is recorded in the run's ownership log *before* it is created,
released last-in-first-out, and a link dies with the namespace that holds it, so nothing ever
appears in the default namespace. A build that fails halfway is rolled back.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from linklab import kinds
from linklab.cmd import CmdError, Result, cmd, require
from linklab.model import Host, IPIface, Node, Scenario
from linklab.netns import NetNS, delete_named
from linklab.ownership import Run
from linklab.twohost.placement import Placement
from linklab.twohost.uplink import Uplink, UplinkError, adopt

FIRST_INDEX = 10          # interface indices we choose ourselves, unique per topology
REMOTE_PORT = "to-remote"  # upstream's end of the remote link

# per-namespace sysctls, written before any link exists: ping sockets for the probes, no
# router advertisements, no duplicate address detection (link-local addresses would stay
# tentative for a second or two and delay the first IPv6 exchange)
NS_SYSCTLS = {
    "net/ipv4/ping_group_range": "0 2147483647",
    "net/ipv6/conf/default/accept_dad": "0",
    "net/ipv6/conf/all/accept_dad": "0",
    "net/ipv6/conf/default/accept_ra": "0",
    "net/ipv6/conf/all/accept_ra": "0",
}
FORWARDING = {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"}


class BuildError(RuntimeError):
    """The kernel refused part of a topology; names the scenario, namespace and interface."""


@dataclass(frozen=True)
class Split:
    """One node's half of a two-host topology: ``peer`` False builds upstream, remote and the
    hosts kept here, with ``uplink`` as one more port of the upstream switch; True builds the
    placed host with ``uplink`` as its parent NIC, and its containers."""

    placement: Placement
    peer: bool
    uplink: Uplink

    def here(self, name: str) -> bool:
        return self.placement.on_peer(name) == self.peer


class Topology:
    """A live topology: namespaces by logical name and the interfaces created in them (on a
    split topology, only this node's half: :meth:`here`)."""

    def __init__(self, scenario: Scenario, run: Run) -> None:
        self.scenario = scenario
        self.run = run
        self.namespaces: dict[str, NetNS] = {}
        self._index: dict[tuple[str, str], int] = {}
        self._next = FIRST_INDEX
        self.stack = ExitStack()      # build()'s: kinds defer their own teardown on it (LIFO)
        self.kind_state: dict[Any, Any] = {}  # per-kind data of this topology (e.g. cni dirs)
        self.programs: dict[str, list[int]] = {}   # host -> ids of its BPF programs
        self.split: Split | None = None
        self.peer: Any = None        # node-a of a split: the linklab.twohost.peer.PeerClient
        self.facts: dict[str, dict[str, str]] = {}   # split: the other half's MACs by name
        self.listening: dict[str, tuple[int, str]] = {}  # peer: node-a's listeners by cell id

    def here(self, name: str) -> bool:
        """Is the logical namespace ``name`` built on this node?"""
        return self.split is None or self.split.here(name)

    def remote_listen(self, cell_id: str, dst: str, kind: str,
                      token: bytes) -> tuple[int, bytes]:
        """A listener in ``dst`` on the other node: (port, token the sender must send)."""
        if self.peer is not None:
            return self.peer.listen(cell_id, dst, kind, token), token
        if cell_id in self.listening:
            port, hex_token = self.listening[cell_id]
            return port, bytes.fromhex(hex_token)
        raise BuildError(f"{self.scenario.name}: {cell_id}: no listener for {dst} on the "
                         "other node")

    def remote_heard(self, cell_id: str) -> bool:
        return self.peer is not None and self.peer.heard(cell_id)

    def cmd(self, argv: list[str], name: str, **kw: Any) -> Result:
        """Run argv in the logical namespace ``name``, here or through the peer agent."""
        if self.here(name):
            return cmd(argv, self.ns(name), **kw)
        return self.peer.cmd(argv, name, **kw)

    # -- lookups -------------------------------------------------------------------------
    def ns(self, name: str) -> NetNS:
        return self.namespaces[name]

    def node(self, name: str) -> Node:
        return self.scenario.node(name)

    def ifname(self, name: str) -> str:
        return self.node(name).ifname

    def addr(self, name: str, family: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The first address of ``family`` on the node's interface."""
        iface = self.node(name).addr(family)
        if iface is None:
            raise KeyError(f"{self.scenario.name}: {name} has no IPv{family} address")
        return iface.ip

    def index(self, ns: str, ifname: str) -> int:
        return self._index[(ns, ifname)]

    def has_link(self, ns: str, ifname: str) -> bool:
        """Was ``ifname`` made in ``ns`` (not yet, for a container a CNI plugin will plug)?"""
        return (ns, ifname) in self._index

    def next_index(self, ns: str) -> int:
        """An interface index for a new link in ``ns``, unique across the whole topology:
        before 6.14 the kernel looks a requested index up in the namespace the request is
        sent from (a child created through the host's socket would clash with host/eth0)."""
        value = self._next
        self._next += 1
        return value

    def register(self, ns: str, ifname: str, index: int) -> None:
        self._index[(ns, ifname)] = index

    # -- creation ------------------------------------------------------------------------
    def _netlink(self, ns: str, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except OSError as exc:  # the kernel said no: say where
            raise BuildError(f"{self.scenario.name}: {ns}: {what}: {exc.strerror}") from exc
        except NetlinkError as exc:  # pyroute2's own
            raise BuildError(f"{self.scenario.name}: {ns}: {what}: {exc}") from exc

    def add_link(self, ns: str, ifname: str, kind: str, **attrs: Any) -> int:
        """Create a link inside ``ns`` at an index we choose (up unless it is a veth, whose
        ends can only come up once both exist) and return its index."""
        index = self.next_index(ns)
        self._netlink(ns, f"create {ifname} ({kind})", self.ns(ns).nl.link_add, ifname, index,
                      kind, up=kind != "veth", **attrs)
        self.register(ns, ifname, index)
        return index

    def add_veth(self, ns: str, ifname: str, peer_ns: str, peer_ifname: str,
                 **attrs: Any) -> tuple[int, int]:
        """A veth pair, both ends up: ``ifname`` in ``ns``, its peer created in ``peer_ns``."""
        peer_index = self.next_index(peer_ns)
        index = self.add_link(ns, ifname, "veth", peer={
            "ifname": peer_ifname, "index": peer_index, "net_ns_fd": self.ns(peer_ns).fd,
            "mtu": attrs.get("mtu")}, **attrs)
        self.register(peer_ns, peer_ifname, peer_index)
        self.up(ns, index)
        self.up(peer_ns, peer_index)
        return index, peer_index

    def add_child(self, c: Node, kind: str, data: list[tuple[str, Any]],
                  address: str | None = None) -> int:
        """Create a macvlan/ipvlan child of the host's parent directly in ``c``'s namespace."""
        index = self.next_index(c.name)
        host = self.scenario.host_of(c.host).node
        parent = self.index(host.name, host.ifname)
        self._netlink(c.name, f"create {c.ifname} ({kind}) on {host.name}/{host.ifname}",
                      self.ns(host.name).nl.link_add, c.ifname, index, kind, up=True, link=parent,
                      net_ns_fd=self.ns(c.name).fd, data=data, address=address)
        self.register(c.name, c.ifname, index)
        return index

    def up(self, ns: str, index: int) -> None:
        self._netlink(ns, f"set index {index} up", self.ns(ns).nl.link_set, index, up=True)

    def enslave(self, ns: str, index: int, master: int) -> None:
        self._netlink(ns, f"enslave index {index} to {master}", self.ns(ns).nl.link_set, index,
                      up=True, master=master)

    def add_addrs(self, ns: str, index: int, addrs: Iterable[IPIface]) -> None:
        nl = self.ns(ns).nl
        for a in addrs:
            self._netlink(ns, f"add address {a}", nl.addr_add, index, str(a.ip),
                          a.network.prefixlen, a.version, nodad=a.version == 6)

    def add_routes(self, node: Node) -> None:
        nl = self.ns(node.name).nl
        for r in node.routes:
            dst, dst_len = None, 0
            if r.to != "default":
                net = ipaddress.ip_network(r.to)
                dst, dst_len = str(net.network_address), net.prefixlen
            oif = self.index(node.name, r.dev) if r.dev is not None else None
            self._netlink(node.name, f"add route {r.to}", nl.route_add, r.family, dst, dst_len,
                          str(r.via) if r.via else None, oif)


def _open_namespace(stack: ExitStack, topo: Topology, logical: str, forwarding: bool) -> None:
    name = topo.run.ns_name(logical)
    topo.run.own_namespace(name)
    ns = NetNS(name)

    def release() -> None:
        try:
            ns.close()
        except KeyboardInterrupt:   # Ctrl-C landed mid-close: finish the deletion, then stop
            delete_named(name)
            topo.run.disown_namespace(name)
            raise
        topo.run.disown_namespace(name)

    stack.callback(release)
    topo.namespaces[logical] = ns
    ns.nl.link_set(1, up=True)  # lo
    topo.register(logical, "lo", 1)
    with ns.enter():
        for key, value in (NS_SYSCTLS | (FORWARDING if forwarding else {})).items():
            with open(f"/proc/sys/{key}", "w") as fh:
                fh.write(value)


@contextmanager
def build(scenario: Scenario, run: Run, split: Split | None = None) -> Iterator[Topology]:
    """Build ``scenario`` (or one node's half, ``split``); yield the live :class:`Topology`;
    delete it (LIFO) on exit."""
    topo, resources = start(scenario, run, split)
    with resources:
        yield topo


def start(scenario: Scenario, run: Run, split: Split | None = None) -> tuple[Topology, ExitStack]:
    """Build ``scenario`` (rolled back if any step fails) and hand over its owner: closing the
    returned stack deletes the topology LIFO; never closing it keeps it (``linklab up``).
    With ``split``, build only this node's half of a two-host scenario (:class:`Split`)."""
    sc = scenario
    with ExitStack() as stack:
        topo = Topology(sc, run)
        topo.stack = stack
        topo.split = split
        here = topo.here
        hosts = [h for h in sc.hosts if here(h.name)]
        containers = [c for c in sc.containers if here(c.name)]
        for name in ("upstream", "remote"):
            if here(name):
                _open_namespace(stack, topo, name, forwarding=name == "upstream")
        for h in hosts:
            _open_namespace(stack, topo, h.name, kinds.REGISTRY[h.kind].HOST_FORWARDS)
        for c in containers:
            _open_namespace(stack, topo, c.name, forwarding=False)

        if here("upstream"):
            # upstream: the LAN switch (a bridge holding the router address) with one port
            # per host's parent NIC, and the routed link to the remote host
            lan = topo.add_link("upstream", sc.upstream.ifname, "bridge", mtu=sc.mtu)
            topo.add_addrs("upstream", lan, sc.upstream.addrs)
            for h in hosts:
                port_name = uplink_port(h.name)
                _, port = topo.add_veth(h.name, h.node.ifname, "upstream", port_name,
                                        mtu=sc.mtu)
                _port_on_switch(topo, port, lan, port_name)
                topo.add_addrs(h.name, topo.index(h.name, h.node.ifname), h.node.addrs)
            if split is not None:    # the wire to the other node's half: one more port
                port = _adopt(stack, topo, split.uplink, "upstream", split.uplink.ifname)
                _port_on_switch(topo, port, lan, split.uplink.ifname)

            rindex, _ = topo.add_veth("remote", sc.remote.ifname, "upstream", REMOTE_PORT)
            topo.add_addrs("upstream", topo.index("upstream", REMOTE_PORT), sc.remote_gateway)
            topo.add_addrs("remote", rindex, sc.remote.addrs)
        else:                        # the placed host: the node's NIC is its parent NIC
            for h in hosts:
                index = _adopt(stack, topo, split.uplink, h.name, h.node.ifname)
                topo.add_addrs(h.name, index, h.node.addrs)

        for h in hosts:
            kinds.REGISTRY[h.kind].prepare(topo, h)
        for c in containers:
            host = sc.host_of(c.host)
            index = kinds.REGISTRY[host.kind].attach(topo, c, host)
            if index is not None:       # None: the kind configured the addresses (cni IPAM)
                topo.add_addrs(c.name, index, c.addrs)
        for node in (sc.upstream, sc.remote, *(h.node for h in sc.hosts), *sc.containers):
            if here(node.name):
                topo.add_routes(node)
        for h in hosts:   # e.g. BPF programs, once every link and address exists
            if finish := getattr(kinds.REGISTRY[h.kind], "finish", None):
                finish(topo, h, stack)
        for h in hosts:   # the scenario's own ruleset, last: it may name every link
            if h.nftables:
                load_nftables(topo, h)
        return topo, stack.pop_all()


def load_nftables(topo: Topology, host: Host) -> None:
    """Load a host's ``nftables`` ruleset in its namespace (it dies with the namespace)."""
    try:
        topo.cmd([require("nft", "nftables"), "-f", "-"], host.name, input=host.nftables,
                 timeout=30)
    except CmdError as exc:
        raise BuildError(f"{topo.scenario.name}: {host.name}: nftables: "
                         f"{exc.stderr.strip() or exc}") from exc


def _port_on_switch(topo: Topology, port: int, lan: int, port_name: str) -> None:
    topo.enslave("upstream", port, lan)
    if topo.scenario.hairpin:
        # IFLA_PROTINFO needs pyroute2's nested bridge-port encoding: use its API here
        topo._netlink("upstream", f"hairpin on {port_name}", topo.ns("upstream").ipr.brport,
                      "set", index=port, mode=1)


def _adopt(stack: ExitStack, topo: Topology, uplink: Uplink, logical: str, new_name: str) -> int:
    """Lend the node's NIC to ``logical`` as ``new_name``; it goes back before the namespace
    is deleted (LIFO)."""
    ns = topo.ns(logical)
    try:
        index, release = adopt(topo.run, uplink, ns.name, new_name, topo.scenario.mtu,
                               f"{topo.scenario.name}: {logical}")
    except UplinkError as exc:
        raise BuildError(str(exc)) from exc
    stack.callback(release)
    topo.register(logical, new_name, index)
    # the NIC keeps the per-device settings of the namespace it came from
    for key in ("accept_dad", "accept_ra"):
        path = f"net/ipv6/conf/{new_name}/{key}"
        try:
            ns.sysctl(path, 0)
        except FileNotFoundError:   # no IPv6 on this NIC
            pass
    return index


def uplink_port(host: str) -> str:
    """The upstream switch's port facing ``host``'s parent NIC."""
    return f"p-{host}"
