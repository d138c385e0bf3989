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

import errno
import os
import resource
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError as IPRouteError  # reads (ipr)

from linklab import kinds
from linklab.build import Topology
from linklab.checks import PATHS, UNSET, Cell, endpoints, errno_name, source
from linklab.cmd import require
from linklab.flows import FlowCheck
from linklab.held import held
from linklab.nl import NetlinkError
from linklab.suite import time_scale

SCALE = time_scale()
RESEND = 0.1 * SCALE
QUIET = 0.2 * SCALE
POSITIVE_WAIT = 3.0 * SCALE

ETH_P_PROBE = 0x88B5                      # IEEE 802 local experimental ethertype
PROBE_GROUP = bytes.fromhex("0300006c6c01")  # locally administered multicast MAC
SOL_PACKET, PACKET_ADD_MEMBERSHIP, PACKET_MR_MULTICAST = 263, 1, 0
IP_MTU_DISCOVER, IP_PMTUDISC_DO = 10, 2
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_DONTFRAG = 23, 2, 62
RESOLVED = 0x02 | 0x04 | 0x08 | 0x10 | 0x80  # REACHABLE STALE DELAY PROBE PERMANENT
# the kernel's neighbour table is one for every namespace: a burst of new neighbours past its
# limit (all pairs of many containers on one L2 subnet) fails to send with ENOBUFS
NEIGH_FULL = (" (the kernel's neighbour table is full: net.ipv4.neigh.default.gc_thresh3, shared "
              "by every namespace; route the containers, see bench/scale.py)")
# probes open at once: a batch larger than this (all pairs of hundreds of containers) runs in
# chunks of it, each with its own wait, under the process's open-file limit
CHUNK = max(256, min(4096, (resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1024) // 2))


@dataclass
class Observation:
    result: str        # "pass" | "blocked" | an errno name
    detail: str = ""


class Probe:
    """One cell's probe; subclasses open sockets in ``__init__`` and fill ``result``."""

    expected: str = "pass"
    result: Observation | None = None
    fds: tuple[socket.socket, ...] = ()
    wfds: tuple[socket.socket, ...] = ()    # sockets whose writability is the answer

    def send(self) -> None: ...

    def readable(self, sock: socket.socket) -> None: ...

    def poll(self) -> None: ...

    def writable(self, sock: socket.socket) -> None: ...

    def close(self) -> None:
        for s in self.fds:
            s.close()


class Unopened(Probe):
    """A probe that could not be opened: its observation says why (the batch goes on)."""

    def __init__(self, result: Observation) -> None:
        self.result = result


def _family(fam: str) -> int:
    return 6 if fam == "v6" else 4


def holding(topo: Topology, name: str) -> str:
    """What ``name``'s interface holds, for an error: ``<namespace>/<ifname> holds <addresses>``
    (each with the state that keeps it unusable, e.g. ``tentative``)."""
    ns, ifname = topo.ns(name), topo.ifname(name)
    where = f"{ns.name}/{ifname}"
    try:
        index = ns.ipr.link_lookup(ifname=ifname)
        addrs = held(ns, index[0]) if index else None
    except (OSError, IPRouteError) as exc:
        return f"{where}: its addresses could not be read ({exc})"
    if addrs is None:
        return f"{where} does not exist"
    return f"{where} holds {', '.join(map(str, addrs)) or 'no address'}"


def bind_source(sock: socket.socket, topo: Topology, src: str, family: int,
                what: str) -> Observation | None:
    """Bind a probe's socket to ``src``'s address: None once bound, else the cell's
    observation (the errno, and what the interface holds: an address the kernel has not
    finished adding, or none at all)."""
    address = str(topo.addr(src, family))
    try:
        sock.bind((address, 0))
    except OSError as exc:
        return Observation(errno_name(exc.errno or 0), f"{what}: bind {address} failed "
                                                       f"({exc.strerror}); {holding(topo, src)}")
    return None


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
        header = 48 if self.v6 else 28
        self.payload = bytes((size - header) if size else 16)
        self.seq = 0
        self.what = f"{src} -> {dst} {self.dst}" + (f" size {size} DF" if size else "")
        self.result = bind_source(self.sock, topo, src, family, self.what)
        if df and self.v6:
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
            self.sock.setsockopt(socket.IPPROTO_IPV6, IPV6_DONTFRAG, 1)
        elif df:
            self.sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)

    def send(self) -> None:
        self.seq += 1
        kind = 128 if self.v6 else 8
        packet = struct.pack("!BBHHH", kind, 0, 0, 0, self.seq) + self.payload
        try:
            self.sock.sendto(packet, (self.dst, 0))
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: send failed "
                                                 f"{errno_name(exc.errno or 0)}"
                                      + (NEIGH_FULL if exc.errno == errno.ENOBUFS else ""))

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
        self.mac = mac_of(topo, dst)
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


def mac_of(topo: Topology, name: str) -> str:
    """The MAC of ``name``'s interface, read here or, on a split topology, from the other
    node's facts."""
    if not topo.here(name):
        return topo.facts[name]["mac"]
    return topo.ns(name).ipr.get_links(topo.index(name, topo.ifname(name)))[0] \
        .get_attr("IFLA_ADDRESS")


class Listener:
    """A receiver in ``dst``'s namespace: UDP on an ephemeral port (``udp``: the broadcast
    check) or a packet socket that joined :data:`PROBE_GROUP` (``l2``: the multicast check);
    :meth:`drain` reads what arrived and says whether ``token`` was among it."""

    def __init__(self, topo: Topology, dst: str, kind: str, token: bytes) -> None:
        self.token, self.kind, self.heard = token, kind, False
        dst_if = topo.ifname(dst)
        with topo.ns(dst).enter():
            if kind == "udp":
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            else:
                self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                          socket.htons(ETH_P_PROBE))
        if kind == "udp":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("0.0.0.0", 0))
            self.port = self.sock.getsockname()[1]
        else:
            self.sock.bind((dst_if, ETH_P_PROBE))
            mreq = struct.pack("iHH8s", topo.index(dst, dst_if), PACKET_MR_MULTICAST, 6,
                               PROBE_GROUP)
            self.sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            self.port = 0
        self.sock.setblocking(False)

    def drain(self) -> bool:
        while not self.heard:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                break
            self.heard = (data if self.kind == "udp" else data[14:22]) == self.token
        return self.heard

    def close(self) -> None:
        self.sock.close()


class _Received(Probe):
    """A probe whose answer is a token heard by a :class:`Listener` in ``dst``: here, or on
    the other node of a split topology (asked every ``RESEND`` s, or read after the batch)."""

    def _listen(self, topo: Topology, dst: str, kind: str, cell_id: str) -> int:
        self.token = os.urandom(8)
        self.topo, self.cell_id = topo, cell_id
        self.rx: Listener | None = None
        self.asked = 0.0
        if topo.here(dst):
            self.rx = Listener(topo, dst, kind, self.token)
            self.fds = (self.rx.sock,)
            return self.rx.port
        port, self.token = topo.remote_listen(cell_id, dst, kind, self.token)
        return port

    def readable(self, sock: socket.socket) -> None:
        if self.rx is not None and self.rx.drain():
            self.result = Observation("pass", f"{self.what}: received")

    def poll(self) -> None:
        now = time.monotonic()
        if self.rx is None and now - self.asked >= RESEND:
            self.asked = now
            if self.topo.remote_heard(self.cell_id):
                self.result = Observation("pass", f"{self.what}: received on the peer")

    def close(self) -> None:
        super().close()
        self.tx.close()


class Broadcast(_Received):
    """A UDP datagram to ``src``'s subnet-directed broadcast address, heard by ``dst``?"""

    def __init__(self, topo: Topology, src: str, dst: str, cell_id: str = "") -> None:
        iface = topo.node(src).addr(4)
        self.bcast = str(iface.network.broadcast_address)
        self.port = self._listen(topo, dst, "udp", cell_id)
        with topo.ns(src).enter():
            self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.tx.setblocking(False)
        self.what = f"{src} -> {self.bcast}:{self.port}, listening in {dst}"
        self.result = bind_source(self.tx, topo, src, 4, self.what)

    def send(self) -> None:
        try:
            self.tx.sendto(self.token, (self.bcast, self.port))
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: {errno_name(exc.errno or 0)}")


class Multicast(_Received):
    """A raw Ethernet frame to a multicast MAC that ``dst`` joined (no IP address used)."""

    def __init__(self, topo: Topology, src: str, dst: str, cell_id: str = "") -> None:
        dst_if, src_if = topo.ifname(dst), topo.ifname(src)
        self._listen(topo, dst, "l2", cell_id)
        with topo.ns(src).enter():
            self.tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_PROBE))
        self.tx.bind((src_if, ETH_P_PROBE))
        src_mac = bytes.fromhex(mac_of(topo, src).replace(":", ""))
        self.frame = PROBE_GROUP + src_mac + struct.pack("!H", ETH_P_PROBE) + self.token + \
            bytes(38)
        self.tx.setblocking(False)
        self.what = f"{src}/{src_if} -> {PROBE_GROUP.hex(':')} joined by {dst}/{dst_if}"

    def send(self) -> None:
        try:
            self.tx.send(self.frame)
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: {errno_name(exc.errno or 0)}")


class Servers:
    """The listeners of a batch's tcp and udp flows, one per (node, family, proto, port), each
    in its destination's namespace: tcp listens (the kernel completes the handshake), udp
    echoes every datagram to its sender. A port already bound there (the node runs its own
    service) is left to that service; a listener that cannot bind otherwise is the flow's
    observation (:meth:`ensure`)."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.socks: dict[tuple[str, int, str, int], socket.socket | None] = {}
        self.failed: dict[tuple[str, int, str, int], Observation] = {}
        self.fresh: list[socket.socket] = []      # udp sockets the loop must serve

    def ensure(self, node: str, family: int, proto: str, port: int) -> Observation | None:
        """The listener of (node, family, proto, port) made once; the observation of its
        failed bind, or None."""
        key = (node, family, proto, port)
        if key in self.socks:
            return self.failed.get(key)
        af = socket.AF_INET6 if family == 6 else socket.AF_INET
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with self.topo.ns(node).enter():
            sock = socket.socket(af, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        address = str(self.topo.addr(node, family))
        try:
            sock.bind((address, port))
        except OSError as exc:
            sock.close()
            self.socks[key] = None
            if exc.errno == errno.EADDRINUSE:
                return None
            self.failed[key] = Observation(
                errno_name(exc.errno or 0), f"{proto} listener on {node} [{address}]:{port}: "
                f"bind failed ({exc.strerror}); {holding(self.topo, node)}")
            return self.failed[key]
        sock.setblocking(False)
        if proto == "tcp":
            sock.listen(4096)
        else:
            self.fresh.append(sock)
        self.socks[key] = sock
        return None

    @staticmethod
    def echo(sock: socket.socket) -> None:
        """Answer every datagram waiting on a udp listener."""
        while True:
            try:
                data, peer = sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                sock.sendto(data, peer)
            except OSError:
                pass

    def close(self) -> None:
        for sock in self.socks.values():
            if sock is not None:
                sock.close()
        self.socks.clear()


def flow_socket(topo: Topology, src: str, family: int, kind: int) -> socket.socket:
    """A non-blocking socket of ``kind`` made in ``src``'s namespace (bound by
    :func:`bind_source`)."""
    af = socket.AF_INET6 if family == 6 else socket.AF_INET
    with topo.ns(src).enter():
        sock = socket.socket(af, kind)
    sock.setblocking(False)
    return sock


class TcpConnect(Probe):
    """A tcp connect from ``src`` to ``dst``:``port`` (a listener there): the handshake
    completing is ``pass``; a refusal or no answer is ``blocked``. One SYN, retransmitted by
    the kernel; closed with a reset (no TIME_WAIT left behind)."""

    def __init__(self, topo: Topology, src: str, dst: str, family: int, port: int) -> None:
        self.dst = str(topo.addr(dst, family))
        self.sock = flow_socket(topo, src, family, socket.SOCK_STREAM)
        self.wfds = (self.sock,)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.what = f"{src} -> {dst} {self.dst} tcp/{port}"
        self.result = bind_source(self.sock, topo, src, family, self.what)
        if self.result is not None:
            return
        code = self.sock.connect_ex((self.dst, port))
        if code not in (0, errno.EINPROGRESS):
            self.result = Observation("blocked", f"{self.what}: connect {errno_name(code)}")

    def close(self) -> None:
        self.sock.close()

    def writable(self, sock: socket.socket) -> None:
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.result = Observation("pass", f"{self.what}: connected") if code == 0 else \
            Observation("blocked", f"{self.what}: {errno_name(code)}")


class UdpEcho(Probe):
    """A udp datagram from ``src`` to ``dst``:``port``, echoed by the listener there: the
    echo arriving is ``pass``; silence or an ICMP error (ECONNREFUSED) is ``blocked``."""

    def __init__(self, topo: Topology, src: str, dst: str, family: int, port: int) -> None:
        self.dst = str(topo.addr(dst, family))
        self.sock = flow_socket(topo, src, family, socket.SOCK_DGRAM)
        self.fds = (self.sock,)
        self.token = os.urandom(8)
        self.what = f"{src} -> {dst} {self.dst} udp/{port}"
        self.result = bind_source(self.sock, topo, src, family, self.what)
        if self.result is not None:
            return
        try:
            self.sock.connect((self.dst, port))
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: {errno_name(exc.errno or 0)}")

    def send(self) -> None:
        try:
            self.sock.send(self.token)
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: send {errno_name(exc.errno or 0)}")

    def readable(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return
        except OSError as exc:
            self.result = Observation("blocked", f"{self.what}: {errno_name(exc.errno or 0)}")
            return
        if data == self.token:
            self.result = Observation("pass", f"{self.what}: echoed")


def flow_key(fc: FlowCheck) -> str:
    """A flow's key in a batch's observations: one probe per flow and family, however many
    cells ([[check]], [pairs]) ask for it."""
    return f"{fc.family}/{fc.flow.name}"


def make_flow_probe(topo: Topology, fc: FlowCheck, servers: Servers) -> Probe:
    """The probe observing one flow (its listener made first)."""
    f, family = fc.flow, _family(fc.family)
    if f.proto == "icmp":
        probe: Probe = Ping(topo, f.src, f.dst, family)
    elif (unheard := servers.ensure(f.dst, family, f.proto, f.port)) is not None:
        probe = Unopened(unheard)
    else:
        probe = (TcpConnect if f.proto == "tcp" else UdpEcho)(topo, f.src, f.dst, family, f.port)
    probe.expected = fc.expected
    return probe


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
        probe = Broadcast(topo, *endpoints(sc, cell.check), cell_id=cell.id)
    elif cell.check == "multicast":
        probe = Multicast(topo, *endpoints(sc, cell.check), cell_id=cell.id)
    else:
        raise ValueError(f"{cell.id}: {cell.check} is not a batch probe")
    probe.expected = cell.expected
    return probe


def observe(topo: Topology, cells: list[Cell],
            flows: Sequence[FlowCheck] = ()) -> dict[str, Observation]:
    """Probe every cell (and flow: :func:`observe_batch`) concurrently; return cell id ->
    observation. On node-a of a split topology, the cells whose source namespace is on the
    peer are probed there (after these), through the peer agent, with node-a's listeners for
    their receivers here; the scenario's own flows are not observed there (not split)."""
    if topo.peer is None:
        return observe_batch(topo, cells, flows)
    sc = topo.scenario
    mine = [c for c in cells if topo.here(source(sc, c))]
    theirs = [c for c in cells if not topo.here(source(sc, c))]
    seen = observe_batch(topo, mine) if mine else {}
    if theirs:
        listeners: dict[str, Listener] = {}
        try:
            for c in theirs:
                if c.check in ("broadcast", "multicast") and topo.here(endpoints(sc, c.check)[1]):
                    listeners[c.id] = Listener(topo, endpoints(sc, c.check)[1],
                                               "udp" if c.check == "broadcast" else "l2",
                                               os.urandom(8))
            there = topo.peer.observe(theirs, facts_of(topo), {
                cid: (rx.port, rx.token.hex()) for cid, rx in listeners.items()})
            for cid, rx in listeners.items():
                if rx.drain():
                    there[cid] = Observation("pass", f"{there[cid].detail}; received here")
            seen |= there
        finally:
            for rx in listeners.values():
                rx.close()
    return seen


def facts_of(topo: Topology) -> dict[str, dict[str, str]]:
    """What the other node needs of this half: each namespace's interface MAC (none yet for a
    container a CNI plugin has still to plug)."""
    return {name: {"mac": mac_of(topo, name)} for name in topo.namespaces
            if name in _node_names(topo) and topo.has_link(name, topo.ifname(name))}


def _node_names(topo: Topology) -> set[str]:
    sc = topo.scenario
    return {"upstream", "remote", *(h.name for h in sc.hosts), *(c.name for c in sc.containers)}


def observe_batch(topo: Topology, cells: list[Cell],
                  flows: Sequence[FlowCheck] = ()) -> dict[str, Observation]:
    """Probe ``cells`` (by cell id) and ``flows`` (by :func:`flow_key`) together: positives
    end at their reply, the rest share one quiet wait; more than :data:`CHUNK` probes run in
    chunks of it (one wait each)."""
    makers: list[tuple[str, Callable[[], Probe]]] = [
        (c.id, lambda c=c: make_probe(topo, c)) for c in cells]
    servers = Servers(topo)
    makers += [(flow_key(fc), lambda fc=fc: make_flow_probe(topo, fc, servers))
               for fc in {flow_key(fc): fc for fc in flows}.values()]
    seen: dict[str, Observation] = {}
    try:
        for at in range(0, len(makers), CHUNK):
            seen |= _observe_chunk(makers[at:at + CHUNK], servers)
    finally:
        servers.close()
    return seen


def _observe_chunk(makers: list[tuple[str, Callable[[], Probe]]],
                   servers: Servers) -> dict[str, Observation]:
    probes: dict[str, Probe] = {}
    sel = selectors.DefaultSelector()       # epoll: thousands of sockets, past select's 1024
    try:
        for key, make in makers:
            try:
                probes[key] = make()
            except OSError as exc:   # one probe that cannot open is its cell's error, no more
                probes[key] = Unopened(Observation(
                    errno_name(exc.errno or 0), f"{key}: its probe could not be opened: {exc}"))
        for p in probes.values():
            if p.result is None:
                for s in p.fds:
                    sel.register(s, selectors.EVENT_READ, p)
                for s in p.wfds:
                    sel.register(s, selectors.EVENT_WRITE, p)
        for sock in servers.fresh:
            sel.register(sock, selectors.EVENT_READ, servers)
        pollers = [p for p in probes.values() if type(p).poll is not Probe.poll]
        pending = [p for p in probes.values() if p.result is None]
        start = time.monotonic()
        next_send = start
        while True:
            now = time.monotonic()
            pending = [p for p in pending if p.result is None]
            waiting_pos = any(p.expected in ("pass", UNSET) for p in pending)
            if not pending or (now - start >= QUIET and not waiting_pos) \
                    or now - start >= POSITIVE_WAIT:
                break
            if now >= next_send:
                for p in pending:
                    p.send()
                next_send = now + RESEND
            for key, events in sel.select(0.01):
                owner = key.data
                if owner is servers:
                    Servers.echo(key.fileobj)
                    continue
                if owner.result is None:
                    if events & selectors.EVENT_READ:
                        owner.readable(key.fileobj)
                    if events & selectors.EVENT_WRITE and owner.result is None:
                        owner.writable(key.fileobj)
                if owner.result is not None:      # done: stop watching (writable stays ready)
                    sel.unregister(key.fileobj)
            for p in pollers:
                if p.result is None:
                    p.poll()
        elapsed = time.monotonic() - start
        return {key: p.result or Observation("blocked", f"{getattr(p, 'what', key)}: no answer "
                                                        f"in {elapsed:.2f}s")
                for key, p in probes.items()}
    finally:
        sel.close()          # the servers' sockets stay open for the next chunk
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
    """Try to add another child of the same kind and mode to the parent: what does the kernel
    say?"""
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
    nft = require("nft", "nftables") if topo.here(topo.scenario.containers[0].host) else "nft"
    c1 = topo.scenario.containers[0]
    host = c1.host
    rules = []
    if c1.addr(4):
        rules.append(f"ip daddr {c1.addr(4).ip} icmp type echo-request drop")
    if c1.addr(6):
        rules.append(f"ip6 daddr {c1.addr(6).ip} icmpv6 type echo-request drop")
    ruleset = ("table inet linklab_probe {\n chain pre {\n"
               "  type filter hook prerouting priority 0; policy accept;\n  "
               + "\n  ".join(rules) + "\n }\n}\n")
    topo.cmd([nft, "-f", "-"], host, input=ruleset, timeout=10 * SCALE)
    try:
        yield
    finally:
        topo.cmd([nft, "delete", "table", "inet", "linklab_probe"], host, timeout=10 * SCALE)


SPECIAL = {"mtu-inherit": mtu_inherit, "second-child": second_child}


SHOWN = 20      # mismatched pairs named in a truth table's detail (every one is a results row)


class Observer:
    """Observations of one live topology, made in one batch the first time a cell asks: the
    fixed checks' packets and every flow of the scenario's own checks ([[check]], [pairs])."""

    def __init__(self, topo: Topology, cells: list[Cell]) -> None:
        self.topo = topo
        self.cells = cells
        self._seen: dict[str, Observation] | None = None

    def observe(self, cell: Cell) -> Observation:
        """A cell's observation; a [pairs] cell's is ``truth-table`` when every pair did as
        expected, else ``mismatch`` with each mismatched pair in the detail."""
        if cell.check in SPECIAL:
            if not self.topo.here(source(self.topo.scenario, cell)):
                return self.topo.peer.observe([cell], {}, {})[cell.id]
            return SPECIAL[cell.check](self.topo)
        seen = self._batch()
        if cell.table:
            wrong = [f"{fc.flow.name}: expected {fc.expected}, observed {o.result} ({o.detail})"
                     for fc, o in self.flows(cell) if o.result != fc.expected
                     and fc.expected != UNSET]
            if wrong:
                more = f"; … and {len(wrong) - SHOWN} more" if len(wrong) > SHOWN else ""
                return Observation("mismatch", f"{len(wrong)} of {len(cell.flows)} pairs: "
                                               + "; ".join(wrong[:SHOWN]) + more)
            return Observation(cell.expected, f"{len(cell.flows)} pairs as expected")
        if cell.flows:
            return seen[flow_key(cell.flows[0])]
        return seen[cell.id]

    def flows(self, cell: Cell) -> list[tuple[FlowCheck, Observation]]:
        """Each flow of a cell with its observation."""
        seen = self._batch()
        return [(fc, seen[flow_key(fc)]) for fc in cell.flows]

    def _batch(self) -> dict[str, Observation]:
        if self._seen is None:
            batch = [c for c in self.cells if c.check not in SPECIAL and not c.flows]
            flows = [fc for c in self.cells for fc in c.flows]
            # host-netfilter cells get a batch of their own: with the drop rule loaded, an
            # ipvlan l3s host -> child echo (which crosses the host's prerouting on its way
            # back in) would be dropped too, and read as a property of the datapath
            plain = [c for c in batch if c.check != "host-netfilter"]
            filtered = [c for c in batch if c.check == "host-netfilter"]
            self._seen = observe(self.topo, plain, flows) if plain or flows else {}
            if filtered:
                with netfilter_drop(self.topo):
                    self._seen |= observe(self.topo, filtered)
        return self._seen
