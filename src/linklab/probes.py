"""Observe a live topology: reachability, neighbour resolution, broadcast, multicast and MTU,
each probed with a socket opened inside the source namespace — no process per probe.

All cells of one topology are observed in one batch. A probe retransmits every
``RESEND`` seconds and stops when its answer arrives; the batch ends once every cell
*expected* to pass has answered (or ``POSITIVE_WAIT`` ran out: that cell is then observed
blocked and its test fails) and every cell expected to be blocked was watched for
``QUIET`` seconds. The expectation only decides how long silence is watched, never what
is recorded. ``LINKLAB_TIME_SCALE`` stretches every wait (the VM leg sets it).
"""

from __future__ import annotations

import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from linklab.build import Topology
from linklab.checks import PATHS, Cell, endpoints, errno_name
from linklab.cmd import cmd, require

SCALE = float(os.environ.get("LINKLAB_TIME_SCALE", "1"))
RESEND = 0.1 * SCALE
QUIET = 0.2 * SCALE
POSITIVE_WAIT = 3.0 * SCALE

ETH_P_PROBE = 0x88B5                      # IEEE 802 local experimental ethertype
PROBE_GROUP = bytes.fromhex("0300006c6c01")  # locally administered multicast MAC
SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_MULTICAST = 263, 1, 0
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_DONTFRAG = 23, 2, 62
RESOLVED = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE STALE DELAY PROBE PERMANENT


@dataclass
class Observation:
    result: str        # "pass" | "blocked" | an errno name
    detail: str = ""


class Probe:
    """One cell's probe; subclasses open sockets in ``__init__`` and fill ``result``."""

    expected: str = "pass"
    result: Observation | None = None
    fds: tuple[socket.socket, ...] = ()

    def send(self) -> None: ...

    def readable(self, sock: socket.socket) -> None: ...

    def poll(self) -> None: ...

    def close(self) -> None:
        for s in self.fds:
            s.close()


def _family(fam: str) -> int:
    return 6 if fam == "v6" else 4


class Ping(Probe):
    """ICMP echo over an unprivileged-style ping socket (kernel matches replies by id)."""

    def __init__(self, topo: Topology, src: str, dst: str, family: int, size: int | None = None,
                 df: bool = False) -> None:
        self.dst = str(topo.addr(dst, family))
        self.v6 = family == 6
        af = socket.AF_INET6 if self.v6 else socket.AF_INET
        proto = socket.IPPROTO_ICMPV6 if self.v6 else socket.IPPROTO_ICMP
        with topo.ns(src).enter():
            self.sock = socket.socket(af, socket.SOCK_DGRAM, proto)
        self.fds = (self.sock,)
        self.sock.setblocking(False)
        self.sock.bind((str(topo.addr(src, family)), 0))
        if df and self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
        elif df:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
        header = 48 if self.v6 else 28
        self.payload = bytes((size - header) if size else 16)
        self.seq = 0
        self.what = f"{src} -> {dst} {self.dst}" + (f" size {size} DF" if size else "")

    def send(self) -> None:
        self.seq += 1
        kind = 128 if self.v6 else 8
        packet = struct.pack("!BBHHH", kind, 0, 0, 0, self.seq) + self.payload
        try:
            self.sock.sendto(packet, (self.dst, 0))
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: send failed "
                                                 f"{errno_name(exc.errno or 0)}")

    def readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65535)
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: {errno_name(exc.errno or 0)}")
            return
        if data and data[0] == (129 if self.v6 else 0):
            self.result = Observation("pass", f"{self.what}: echo reply, {len(data)} bytes")


class Neigh(Probe):
    """Does ``src`` resolve ``dst``'s link-layer address (ARP/ND) to ``dst``'s own MAC?"""

    def __init__(self, topo: Topology, src: str, dst: str, family: int) -> None:
        self.ns = topo.ns(src)
        self.dst_ip = str(topo.addr(dst, family))
        dst_ns = topo.ns(dst)
        link = dst_ns.ipr.get_links(topo.index(dst, topo.ifname(dst)))[0]
        self.mac = link.get_attr("IFLA_ADDRESS")
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        with self.ns.enter():
            self.sock = socket.socket(af, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.fds = (self.sock,)
        self.family = 10 if family == 6 else 2
        self.what = f"{src} resolving {dst} {self.dst_ip}"

    def send(self) -> None:
        try:
            self.sock.sendto(b"linklab-neigh", (self.dst_ip, 9))
        except OSError:
            pass  # unreachable neighbours show up in the table state, not here

    def poll(self) -> None:
        for n in self.ns.ipr.get_neighbours(family=self.family, dst=self.dst_ip):
            state, lladdr = n["state"], n.get_attr("NDA_LLADDR")
            if state & RESOLVED and lladdr == self.mac:
                self.result = Observation("pass", f"{self.what}: {lladdr} (state {state:#x})")


class Broadcast(Probe):
    """A UDP datagram to ``src``'s subnet-directed broadcast address, heard by ``dst``?"""

    def __init__(self, topo: Topology, src: str, dst: str) -> None:
        iface = topo.node(src).addr(4)
        self.bcast = str(iface.network.broadcast_address)
        with topo.ns(dst).enter():
            self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.rx.bind(("0.0.0.0", 0))
        self.port = self.rx.getsockname()[1]
        with topo.ns(src).enter():
            self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.tx.bind((str(iface.ip), 0))
        self.rx.setblocking(False)
        self.tx.setblocking(False)
        self.fds = (self.rx, self.tx)
        self.token = os.urandom(8)
        self.what = f"{src} -> {self.bcast}:{self.port}, listening in {dst}"

    def send(self) -> None:
        try:
            self.tx.sendto(self.token, (self.bcast, self.port))
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: {errno_name(exc.errno or 0)}")

    def readable(self, sock: socket.socket) -> None:
        data = sock.recv(64)
        if sock is self.rx and data == self.token:
            self.result = Observation("pass", f"{self.what}: received")


class Multicast(Probe):
    """A raw Ethernet frame to a multicast MAC that ``dst`` joined (no IP address used)."""

    def __init__(self, topo: Topology, src: str, dst: str) -> None:
        dst_if, src_if = topo.ifname(dst), topo.ifname(src)
        with topo.ns(dst).enter():
            self.rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_PROBE))
        self.rx.bind((dst_if, ETH_P_PROBE))
        mreq = struct.pack("iHH8s", topo.index(dst, dst_if), PACKET_MR_MULTICAST, 6,
                           PROBE_GROUP)
        self.rx.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
        with topo.ns(src).enter():
            self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_PROBE))
        self.tx.bind((src_if, ETH_P_PROBE))
        src_mac = bytes.fromhex(topo.ns(src).ipr.get_links(topo.index(src, src_if))[0]
                                .get_attr("IFLA_ADDRESS").replace(":", ""))
        self.token = os.urandom(8)
        self.frame = PROBE_GROUP + src_mac + struct.pack("!H", ETH_P_PROBE) + self.token + \
            bytes(38)
        self.rx.setblocking(False)
        self.tx.setblocking(False)
        self.fds = (self.rx,)
        self.what = f"{src}/{src_if} -> {PROBE_GROUP.hex(':')} joined by {dst}/{dst_if}"

    def send(self) -> None:
        try:
            self.tx.send(self.frame)
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: {errno_name(exc.errno or 0)}")

    def readable(self, sock: socket.socket) -> None:
        data = sock.recv(2048)
        if data[14:22] == self.token:
            self.result = Observation("pass", f"{self.what}: received")

    def close(self) -> None:
        super().close()
        self.tx.close()


def make_probe(topo: Topology, cell: Cell) -> Probe:
    """The probe observing ``cell`` on ``topo``."""
    sc = topo.scenario
    if cell.check in PATHS or cell.check == "host-netfilter":
        # host-netfilter: echo requests from the router to c1, the only probe the rule matches
        src, dst = endpoints(sc, cell.check)
        probe: Probe = Ping(topo, src, dst, _family(cell.family))
    elif cell.check in ("mtu-exact", "mtu-over"):
        src, dst = endpoints(sc, cell.check)
        size = sc.mtu + (1 if cell.check == "mtu-over" else 0)
        probe = Ping(topo, src, dst, _family(cell.family), size=size, df=True)
    elif cell.check == "neigh":
        src, dst = endpoints(sc, cell.check)
        probe = Neigh(topo, src, dst, _family(cell.family))
    elif cell.check == "broadcast":
        probe = Broadcast(topo, *endpoints(sc, cell.check))
    elif cell.check == "multicast":
        probe = Multicast(topo, *endpoints(sc, cell.check))
    else:
        raise ValueError(f"{cell.id}: {cell.check} is not a batch probe")
    probe.expected = cell.expected
    return probe


def observe(topo: Topology, cells: list[Cell]) -> dict[str, Observation]:
    """Probe every cell concurrently; return cell id -> observation."""
    probes: dict[str, Probe] = {}
    try:
        for cell in cells:
            probes[cell.id] = make_probe(topo, cell)
        by_fd = {s.fileno(): (p, s) for p in probes.values() for s in p.fds}
        start = time.monotonic()
        next_send = start
        while True:
            now = time.monotonic()
            pending = [p for p in probes.values() if p.result is None]
            waiting_pos = any(p.expected == "pass" for p in pending)
            if not pending or (now - start >= QUIET and not waiting_pos) \
                    or now - start >= POSITIVE_WAIT:
                break
            if now >= next_send:
                for p in pending:
                    p.send()
                next_send = now + RESEND
            fds = [fd for fd, (p, _) in by_fd.items() if p.result is None]
            ready, _, _ = select.select(fds, [], [], 0.01)
            for fd in ready:
                p, s = by_fd[fd]
                if p.result is None:
                    p.readable(s)
            for p in pending:
                if p.result is None:
                    p.poll()
        elapsed = time.monotonic() - start
        return {cid: p.result or Observation("blocked", f"{getattr(p, 'what', cid)}: no answer "
                                                        f"in {elapsed:.2f}s")
                for cid, p in probes.items()}
    finally:
        for p in probes.values():
            p.close()


# ---- checks that are not packets --------------------------------------------------------------

def mtu_inherit(topo: Topology) -> Observation:
    """Is c1's MTU the parent's MTU?"""
    c1 = topo.scenario.containers[0]
    host = topo.scenario.host_of(c1.host).node
    child = topo.ns(c1.name).ipr.get_links(topo.index(c1.name, c1.ifname))[0]
    parent = topo.ns(host.name).ipr.get_links(topo.index(host.name, host.ifname))[0]
    got, want = child.get_attr("IFLA_MTU"), parent.get_attr("IFLA_MTU")
    detail = f"{c1.name}/{c1.ifname} mtu {got}, parent {host.name}/{host.ifname} mtu {want}"
    return Observation("pass" if got == want else "blocked", detail)


def second_child(topo: Topology) -> Observation:
    """Try to add another child of the same kind and mode to the parent: what does the kernel say?"""
    from linklab import kinds
    from linklab.nl import NetlinkError

    h = next(h for h in topo.scenario.hosts if h.mode == "passthru")
    ns = topo.ns(h.name)
    try:
        kinds.REGISTRY[h.kind].probe(ns.nl, topo.index(h.name, h.node.ifname), h.mode, h.flag)
    except NetlinkError as exc:
        return Observation(errno_name(exc.errno or 0), f"second {h.label} child on {h.name}/"
                                                       f"{h.node.ifname}: {exc.strerror}")
    ns.ipr.link("del", ifname="llprobe1")
    return Observation("pass", f"a second {h.label} child was created (and deleted)")


@contextmanager
def netfilter_drop(topo: Topology) -> Iterator[None]:
    """In c1's host namespace, drop echo requests to c1 at prerouting; removed on exit."""
    nft = require("nft", "nftables")
    c1 = topo.scenario.containers[0]
    host = topo.ns(c1.host)
    rules = []
    if c1.addr(4):
        rules.append(f"ip daddr {c1.addr(4).ip} icmp type echo-request drop")
    if c1.addr(6):
        rules.append(f"ip6 daddr {c1.addr(6).ip} icmpv6 type echo-request drop")
    ruleset = ("table inet linklab_probe {\n chain pre {\n"
               "  type filter hook prerouting priority 0; policy accept;\n  "
               + "\n  ".join(rules) + "\n }\n}\n")
    cmd([nft, "-f", "-"], ns=host, input=ruleset, timeout=10 * SCALE)
    try:
        yield
    finally:
        cmd([nft, "delete", "table", "inet", "linklab_probe"], ns=host, timeout=10 * SCALE)


SPECIAL = {"mtu-inherit": mtu_inherit, "second-child": second_child}


class Observer:
    """Observations of one live topology, made in one batch the first time a cell asks."""

    def __init__(self, topo: Topology, cells: list[Cell]) -> None:
        self.topo = topo
        self.cells = cells
        self._seen: dict[str, Observation] | None = None

    def observe(self, cell: Cell) -> Observation:
        if cell.check in SPECIAL:
            return SPECIAL[cell.check](self.topo)
        if self._seen is None:
            batch = [c for c in self.cells if c.check not in SPECIAL]
            if any(c.check == "host-netfilter" for c in batch):
                with netfilter_drop(self.topo):
                    self._seen = observe(self.topo, batch)
            else:
                self._seen = observe(self.topo, batch)
        return self._seen[cell.id]
