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
from typing import Any

from linklab import kinds
from linklab.model import IPIface, Node, Scenario
from linklab.netns import NetNS
from linklab.ownership import Run

IFA_F_NODAD = 0x02
FIRST_INDEX = 10          # interface indices we choose ourselves, per namespace
UPLINK_PORT = "p-host"    # upstream's end of the host's parent veth
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


class Topology:
    """A live topology: namespaces by logical name and the interfaces created in them."""

    def __init__(self, scenario: Scenario, run: Run) -> None:
        self.scenario = scenario
        self.run = run
        self.namespaces: dict[str, NetNS] = {}
        self._index: dict[tuple[str, str], int] = {}
        self._next: dict[str, int] = {}

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

    def next_index(self, ns: str) -> int:
        value = self._next.get(ns, FIRST_INDEX)
        self._next[ns] = value + 1
        return value

    def register(self, ns: str, ifname: str, index: int) -> None:
        self._index[(ns, ifname)] = index

    def add_veth(self, ns: str, ifname: str, peer_ns: str, peer_ifname: str,
                 **attrs: Any) -> tuple[int, int]:
        """A veth pair: ``ifname`` in ``ns``, its peer created directly in ``peer_ns``."""
        mtu = attrs.get("mtu")
        peer = {"ifname": peer_ifname, "net_ns_fd": self.ns(peer_ns).fd}
        if mtu:
            peer["mtu"] = mtu
        index = self.add_link(ns, ifname, kind="veth", peer=peer, **attrs)
        # pyroute2 encodes no header for the peer, so the kernel picks its index: look it up
        peer_index = self._netlink(peer_ns, f"find {peer_ifname}",
                                   self.ns(peer_ns).ipr.link_lookup, ifname=peer_ifname)[0]
        self.register(peer_ns, peer_ifname, peer_index)
        return index, peer_index

    # -- creation ------------------------------------------------------------------------
    def _netlink(self, ns: str, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except Exception as exc:  # NetlinkError and friends: say where
            raise BuildError(f"{self.scenario.name}: {ns}: {what}: {exc}") from exc

    def add_link(self, ns: str, ifname: str, **attrs: Any) -> int:
        """Create a link inside ``ns`` (up, at an index we choose) and return its index."""
        index = self.next_index(ns)
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self._netlink(ns, f"create {ifname} ({attrs.get('kind')})", self.ns(ns).ipr.link, "add",
                      ifname=ifname, index=index, state="up", **attrs)
        self.register(ns, ifname, index)
        return index

    def add_child(self, c: Node, attrs: dict[str, Any], address: str | None = None) -> int:
        """Create a macvlan/ipvlan child of the host's parent directly in ``c``'s namespace."""
        index = self.next_index(c.name)
        parent = self.index("host", self.scenario.host.ifname)
        extra = {"address": address} if address else {}
        self._netlink(c.name, f"create {c.ifname} ({attrs['kind']}) on host/"
                              f"{self.scenario.host.ifname}",
                      self.ns("host").ipr.link, "add", ifname=c.ifname, index=index,
                      link=parent, net_ns_fd=self.ns(c.name).fd, **attrs, **extra)
        self.register(c.name, c.ifname, index)
        self.up(c.name, index)
        return index

    def up(self, ns: str, index: int) -> None:
        self._netlink(ns, f"set index {index} up", self.ns(ns).ipr.link, "set", index=index,
                      state="up")

    def add_addrs(self, ns: str, index: int, addrs: Iterable[IPIface]) -> None:
        ipr = self.ns(ns).ipr
        for a in addrs:
            flags = IFA_F_NODAD if a.version == 6 else 0
            self._netlink(ns, f"add address {a}", ipr.addr, "add", index=index,
                          address=str(a.ip), prefixlen=a.network.prefixlen, flags=flags)

    def add_routes(self, node: Node) -> None:
        ipr = self.ns(node.name).ipr
        for r in node.routes:
            kw: dict[str, Any] = {"family": 10 if r.family == 6 else 2}
            if r.to == "default" or ipaddress.ip_network(r.to).prefixlen == 0:
                kw["dst"] = "default"
            else:
                net = ipaddress.ip_network(r.to)
                kw.update(dst=str(net.network_address), dst_len=net.prefixlen)
            if r.via is not None:
                kw["gateway"] = str(r.via)
            if r.dev is not None:
                kw["oif"] = self.index(node.name, r.dev)
            self._netlink(node.name, f"add route {r.to}", ipr.route, "add", **kw)


def _open_namespace(stack: ExitStack, topo: Topology, logical: str, forwarding: bool) -> None:
    name = topo.run.ns_name(logical)
    topo.run.own_namespace(name)
    ns = NetNS(name)

    def release() -> None:
        ns.close()
        topo.run.disown_namespace(name)

    stack.callback(release)
    topo.namespaces[logical] = ns
    ns.ipr.link("set", index=1, state="up")  # lo
    topo.register(logical, "lo", 1)
    with ns.enter():
        for key, value in (NS_SYSCTLS | (FORWARDING if forwarding else {})).items():
            with open(f"/proc/sys/{key}", "w") as fh:
                fh.write(value)


@contextmanager
def build(scenario: Scenario, run: Run) -> Iterator[Topology]:
    """Build ``scenario``; yield the live :class:`Topology`; delete it (LIFO) on exit."""
    kind = kinds.REGISTRY[scenario.kind]
    sc = scenario
    with ExitStack() as stack:
        topo = Topology(sc, run)
        _open_namespace(stack, topo, "upstream", forwarding=True)
        _open_namespace(stack, topo, "remote", forwarding=False)
        _open_namespace(stack, topo, "host", forwarding=kind.HOST_FORWARDS)
        for c in sc.containers:
            _open_namespace(stack, topo, c.name, forwarding=False)
        up = topo.ns("upstream")

        # upstream: the LAN switch (a bridge holding the router address) and the remote link
        lan = topo.add_link("upstream", sc.upstream.ifname, kind="bridge", mtu=sc.mtu)
        topo.add_addrs("upstream", lan, sc.upstream.addrs)
        _, port = topo.add_veth("host", sc.host.ifname, "upstream", UPLINK_PORT, mtu=sc.mtu)
        topo._netlink("upstream", f"enslave {UPLINK_PORT}", up.ipr.link, "set", index=port,
                      master=lan, state="up")
        if sc.hairpin:
            topo._netlink("upstream", f"hairpin on {UPLINK_PORT}", up.ipr.brport, "set",
                          index=port, mode=1)
        topo.add_addrs("host", topo.index("host", sc.host.ifname), sc.host.addrs)

        rindex, rport = topo.add_veth("remote", sc.remote.ifname, "upstream", REMOTE_PORT)
        topo.up("upstream", rport)
        topo.add_addrs("upstream", rport, sc.remote_gateway)
        topo.add_addrs("remote", rindex, sc.remote.addrs)

        kind.prepare(topo)
        for c in sc.containers:
            index = kind.attach(topo, c)
            topo.add_addrs(c.name, index, c.addrs)
        for node in (sc.upstream, sc.remote, sc.host, *sc.containers):
            topo.add_routes(node)
        resources = stack.pop_all()
    with resources:
        yield topo
