"""The CNI ``dhcp`` IPAM plugin as a DHCP client in the client-ID matrix.

Per cell: a fresh server (as for the other clients), a fresh CNI dhcp daemon started by PID
in the topology's host namespace with its own socket under a run-owned directory
(``dhcp daemon -socketpath ...``, optionally ``-broadcast``), and a capture of what the
clients put on the wire (in the server's namespace). Each container is then plugged by its
plugin (macvlan or ipvlan with ``ipam.type = dhcp``): the ADD blocks until the daemon holds
a lease or gives up. The observation joins the plugins' results, the server's lease records
and the captured requests (client-identifier, chaddr, broadcast flag).

Cells are data in ``scenarios/dhcp/cni.toml``: setup x daemon variant x server option.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from linklab import cni
from linklab.build import Topology
from linklab.cmd import bkg
from linklab.dhcp.cell import LEASE_WAIT_S, classify_id, clients_on_peer, link_mac
from linklab.dhcp.leases import Lease
from linklab.dhcp.matrix import ANY_SERVER, LEASE_OUTCOMES, Expected, parse_expected
from linklab.dhcp.servers import OPTIONS, Pool, dhcp_server
from linklab.format import Validator, load_toml
from linklab.kinds import cni as cni_kind
from linklab.model import SHIPPED, Scenario
from linklab.ownership import Run
from linklab.suite import time_scale

SCALE = time_scale()
CNI_MATRIX_FILE = SHIPPED / "dhcp" / "cni.toml"
DAEMONS = ("plain", "broadcast")          # dhcp daemon without / with -broadcast
CLIENT_TIMEOUT_S = 2.0 * SCALE            # the daemon's -timeout: one exchange
RESEND_MAX_S = 4.0 * SCALE                # the daemon's -resendmax: its retry budget
ADD_TIMEOUT_S = 60.0 * SCALE              # linklab's bound on one ADD (the plugin's own ends first)
READY_TIMEOUT_S = 5.0 * SCALE
ETH_P_IP = 0x0800
BOOTP_FLAG_BROADCAST = 0x8000
# one more outcome than the other clients know: one lease for both containers, the second
# ADD fails on the duplicate address and its DEL releases the lease the first one still uses
RELEASED = "released"
DISCOVER, REQUEST = 1, 3


@dataclass(frozen=True)
class CniSetup:
    name: str
    description: str
    scenarios: tuple[str, ...]    # one cell per scenario (one machine, or split over two)
    daemons: tuple[str, ...]
    requests_reach_server: bool = True
    why_no_request: str = ""


@dataclass(frozen=True)
class CniDhcpCell:
    setup: CniSetup
    scenario: Scenario
    daemon: str                   # plain | broadcast
    server: str                   # ServerOption label
    expected: Expected

    @property
    def client(self) -> str:
        return "cni-dhcp" + ("-broadcast" if self.daemon == "broadcast" else "")

    @property
    def id(self) -> str:
        short = self.scenario.name.removeprefix("dhcp-")
        return f"dhcp-{self.setup.name}-{short}-{self.server}-{self.client}"


def load_cni_matrix(path: Path | str, scenarios: Mapping[str, Scenario]) -> list[CniDhcpCell]:
    """``setup.NAME = { description, scenario, daemons }`` and
    ``expect.NAME.DAEMON.SERVER-OPTION`` (or ``any-server``) = { lease, stored, why }."""
    v = Validator(Path(path))
    data = load_toml(path)
    v.table(data, "", {"setup", "expect"}, set())
    cells = []
    for name, raw in data["setup"].items():
        w = f"setup.{name}"
        v.table(raw, w, {"description", "scenario", "daemons"},
               {"requests_reach_server", "why_no_request"})
        reach = raw.get("requests_reach_server", True)
        if not isinstance(reach, bool) or (not reach and not raw.get("why_no_request")):
            raise v.fail(f"{w}.requests_reach_server", "true or false; false needs "
                                                            "why_no_request")
        names = raw["scenario"] if isinstance(raw["scenario"], list) else [raw["scenario"]]
        found = []
        for sname in names:
            sc = scenarios.get(sname) if isinstance(sname, str) else None
            if sc is None:
                raise v.fail(f"{w}.scenario", f"no scenario named {sname!r}")
            if sc.kind != "cni" or sc.dhcp is None or \
                    sc.cni["netconf"].get("ipam", {}).get("type") != "dhcp":
                raise v.fail(f"{w}.scenario", f"{sname!r} is not a cni scenario with dhcp "
                                                   "IPAM and a [dhcp] table")
            found.append(sc)
        if not found:
            raise v.fail(f"{w}.scenario", "give a scenario name or a non-empty list of them")
        daemons = raw["daemons"]
        if not isinstance(daemons, list) or not daemons or \
                not all(d in DAEMONS for d in daemons):
            raise v.fail(f"{w}.daemons", f"{daemons!r}: a non-empty list of "
                                              f"{' | '.join(DAEMONS)}")
        setup = CniSetup(name, str(raw["description"]), tuple(sc.name for sc in found),
                         tuple(daemons), reach, str(raw.get("why_no_request", "")))
        expect = data["expect"].get(name)
        if not isinstance(expect, Mapping):
            raise v.fail(f"expect.{name}", "missing: every setup needs expected outcomes")
        v.table(expect, f"expect.{name}", set(), set(DAEMONS))
        for daemon in setup.daemons:
            per_server = expect.get(daemon)
            wd = f"expect.{name}.{daemon}"
            if per_server is None:
                raise v.fail(wd, "missing: give outcomes for every daemon variant")
            v.table(per_server, wd, set(), {ANY_SERVER, *OPTIONS})
            fake = _IdSetup({c.name: "" for c in found[0].containers})
            for server in OPTIONS:
                raw_exp = per_server.get(server, per_server.get(ANY_SERVER))
                if raw_exp is None:
                    raise v.fail(f"{wd}.{server}", "missing: give it or 'any-server'")
                released = isinstance(raw_exp, Mapping) and raw_exp.get("lease") == RELEASED
                if released:      # validated as "same", the outcome it refines
                    raw_exp = {**raw_exp, "lease": LEASE_OUTCOMES[0]}
                exp = parse_expected(v, raw_exp, f"{wd}.{server}", fake)  # type: ignore[arg-type]
                if released:
                    exp = Expected(RELEASED, exp.stored, exp.why)
                cells += [CniDhcpCell(setup, sc, daemon, server, exp) for sc in found]
    return cells


@dataclass(frozen=True)
class _IdSetup:
    """What :func:`~linklab.dhcp.matrix.parse_expected` needs of a setup: the containers an
    identifier may name."""

    client_ids: Mapping[str, str]


def client_id(container_id: str, network: str, ifname: str) -> str:
    """The identifier the CNI dhcp daemon is documented to send: type 0 followed by
    ``<CNI_CONTAINERID>/<netconf name>/<CNI_IFNAME>`` (colon hex, as lease files store it)."""
    raw = b"\x00" + f"{container_id}/{network}/{ifname}".encode()
    return ":".join(f"{b:02x}" for b in raw)


# ---- the daemon -----------------------------------------------------------------------------

@dataclass
class Daemon:
    socket_path: str
    pid: int
    log_path: Path
    argv: list[str]

    def log_tail(self, chars: int = 600) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip() or "(empty log)"
        except OSError:
            return "(no log)"


@contextmanager
def dhcp_daemon(run: Run, ns: Any, *, broadcast: bool, scaled: bool = True) -> Iterator[Daemon]:
    """The CNI dhcp daemon in ``ns`` on a socket in a fresh run-owned directory; recorded
    and stopped by PID, directory removed on exit. Its timeouts stretch with
    LINKLAB_TIME_SCALE unless ``scaled`` is false (a cell expected to get no lease only has
    to show that the ADD gives up)."""
    scale = 1.0 if scaled else 1.0 / SCALE
    workdir = Path(run.tmpdir("cni-dhcpd"))
    try:
        sock = str(workdir / "dhcp.sock")
        argv = [cni.plugin_path("dhcp"), "daemon", "-socketpath", sock,
                "-timeout", f"{CLIENT_TIMEOUT_S * scale:g}s",
                "-resendmax", f"{RESEND_MAX_S * scale:g}s"]
        if broadcast:
            argv.append("-broadcast")
        log_path = workdir / "daemon.log"
        with open(log_path, "w") as log, \
                bkg(argv, ns=ns, owner=run, stdout=log, stderr=log) as proc:
            daemon = Daemon(sock, proc.pid, log_path, argv)
            t0 = time.monotonic()
            while not os.path.exists(sock):
                if proc.poll() is not None or time.monotonic() - t0 > READY_TIMEOUT_S:
                    raise cni.CniError("dhcp", "-", "daemon",
                                       f"did not create its socket {sock} (status "
                                       f"{proc.poll()}); log: {daemon.log_tail()}")
                time.sleep(0.01)
            yield daemon
            if proc.poll() is not None:
                raise cni.CniError("dhcp", "-", "daemon", f"died during the test (status "
                                                          f"{proc.returncode}); log: "
                                                          f"{daemon.log_tail()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        run.disown_path(str(workdir))


# ---- what the clients put on the wire ---------------------------------------------------------

@dataclass(frozen=True)
class Request:
    """One client -> server DHCP message seen at the server."""

    msg_type: int                 # 1 DISCOVER, 3 REQUEST, 7 RELEASE, ...
    chaddr: str
    broadcast: bool
    client_id: str | None


def parse_bootp(ip_packet: bytes) -> Request | None:
    """A client -> server DHCP message from an IPv4 packet, or None."""
    if len(ip_packet) < 20 or ip_packet[0] >> 4 != 4 or ip_packet[9] != socket.IPPROTO_UDP:
        return None
    udp = ip_packet[(ip_packet[0] & 0x0F) * 4:]
    if len(udp) < 8 + 240 or struct.unpack("!H", udp[2:4])[0] != 67:
        return None
    bootp = udp[8:]
    if bootp[0] != 1 or bootp[236:240] != b"\x63\x82\x53\x63":
        return None
    flags = struct.unpack("!H", bootp[10:12])[0]
    chaddr = ":".join(f"{b:02x}" for b in bootp[28:28 + bootp[2]])
    opts, i, msg_type, cid = bootp[240:], 0, 0, None
    while i < len(opts) and opts[i] != 255:
        if opts[i] == 0:
            i += 1
            continue
        code, size = opts[i], opts[i + 1]
        value = opts[i + 2:i + 2 + size]
        if code == 53 and value:
            msg_type = value[0]
        elif code == 61:
            cid = ":".join(f"{b:02x}" for b in value)
        i += 2 + size
    return Request(msg_type, chaddr, bool(flags & BOOTP_FLAG_BROADCAST), cid)


class Capture:
    """Client -> server DHCP messages arriving on ``ifname`` in ``ns`` (a packet socket)."""

    def __init__(self, ns: Any, ifname: str) -> None:
        with ns.enter():
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM,
                                      socket.htons(ETH_P_IP))
        self.sock.bind((ifname, ETH_P_IP))
        self.sock.setblocking(False)
        self.seen: list[Request] = []

    def drain(self) -> list[Request]:
        while True:
            try:
                data = self.sock.recv(65535)
            except BlockingIOError:
                return self.seen
            if req := parse_bootp(data):
                self.seen.append(req)

    def close(self) -> None:
        self.sock.close()


# ---- one cell -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Plugged:
    """What one container's ADD did."""

    name: str
    address: str | None           # the address the plugin's result assigned
    error: str | None
    seconds: float
    link_left: bool               # after a failed ADD (and its DEL): the interface remains


@dataclass(frozen=True)
class CniObservation:
    lease: str                    # same | distinct | none | inconsistent: ...
    stored: tuple[str, ...]
    configured: tuple[str, ...]
    plugged: tuple[Plugged, ...]
    leases: tuple[Lease, ...]
    requests: tuple[Request, ...]
    expected_ids: Mapping[str, str]
    macs: Mapping[str, str]
    parent_mac: str
    server_start_s: float
    detail: str
    clients_kernel: str = ""      # the peer's kernel when the containers were on the peer


def _classify(plugged: list[Plugged], leases: list[Lease]) -> str:
    granted = [p.address.split("/")[0] for p in plugged if p.address]
    held = {str(le.address) for le in leases}
    duplicate = [p for p in plugged if p.error and "address already in use" in p.error
                 and any(a in p.error for a in granted)]
    if len(granted) == 1 and duplicate and granted[0] not in held:
        return RELEASED
    if not granted:
        return "none" if not leases else f"inconsistent: no ADD succeeded, server holds " \
                                             f"{', '.join(sorted(held))}"
    missing = [a for a in granted if a not in held]
    if missing:
        return f"inconsistent: {', '.join(missing)} granted but not in the lease file"
    if len(set(granted)) == 1 and len(leases) == 1:
        return "same"
    if len(granted) == len(plugged) and len(set(granted)) == len(granted) == len(leases):
        return "distinct"
    if len(leases) == 1:
        return "same"       # one lease; the second container's ADD failed on it
    return f"inconsistent: {len(granted)} ADDs succeeded, {len(leases)} leases"


@dataclass(frozen=True)
class ClientSide:
    """What the containers' side of a CNI cell did: the ADDs, the MACs of the links they
    made, the identifiers the daemon is documented to send, the parent's MAC, its log."""

    plugged: tuple[Plugged, ...]
    macs: Mapping[str, str]
    ids: Mapping[str, str]
    parent_mac: str
    daemon_log: str

    def to_json(self) -> dict:
        """For the peer agent's reply (the containers of a split cell live on node-b)."""
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict) -> ClientSide:
        return cls(tuple(Plugged(**p) for p in raw["plugged"]), raw["macs"], raw["ids"],
                   raw["parent_mac"], raw["daemon_log"])


def clients_host(sc: Scenario) -> Any:
    """The host whose namespace runs the daemon and the plugins: the containers' host."""
    return next(h for h in sc.hosts if h.name == sc.containers[0].host)


@contextmanager
def plugged_side(topo: Topology, run: Run, daemon: str, expect_none: bool) -> Iterator[ClientSide]:
    """The daemon up, c1 then c2 plugged (each ADD blocks until a lease or the daemon gives
    up); on exit the DELs (releasing through the daemon), then the daemon stops. Runs where
    the containers live: here, or in the peer agent of a split topology."""
    sc = topo.scenario
    host = clients_host(sc)
    network = sc.cni["netconf"]["name"]
    ids = {c.name: client_id(cni_kind.container_id(topo, c), network, c.ifname)
           for c in sc.containers}
    plugged: list[Plugged] = []
    macs: dict[str, str] = {}         # the MAC of each interface a successful ADD made
    with dhcp_daemon(run, topo.ns(host.name), broadcast=daemon == "broadcast",
                     scaled=not expect_none) as d, ExitStack() as plugs:
        for c in sc.containers:
            t0 = time.monotonic()
            left: list[bool] = []

            def look(c=c, left=left) -> None:
                left.append(bool(topo.ns(c.name).ipr.link_lookup(ifname=c.ifname)))
            try:
                result = cni_kind.plug(topo, c, host, stack=plugs, timeout_s=ADD_TIMEOUT_S,
                                       extra_ipam={"daemonSocketPath": d.socket_path},
                                       failed_add=look)
                addrs = cni.result_addresses(result, c.ifname)
                macs[c.name] = link_mac(topo, c.name)
                plugged.append(Plugged(c.name, addrs[0] if addrs else None, None,
                                       time.monotonic() - t0, False))
            except cni.CniError as exc:
                plugged.append(Plugged(c.name, None, exc.msg, time.monotonic() - t0,
                                       any(left)))
        parent_mac = topo.ns(host.name).ipr.get_links(
            topo.index(host.name, host.node.ifname))[0].get_attr("IFLA_ADDRESS").lower()
        yield ClientSide(tuple(plugged), macs, ids, parent_mac, d.log_tail(400))


@contextmanager
def peer_side(peer: Any, daemon: str, expect_none: bool) -> Iterator[ClientSide]:
    """:func:`plugged_side` in the peer agent (a split topology's containers live there)."""
    side = peer.cni_plug(daemon, expect_none)
    try:
        yield side
    finally:
        peer.cni_unplug()


def run_cni_cell(cell: CniDhcpCell, topo: Topology, run: Run) -> CniObservation:
    """Server and capture up, then the containers' side (here, or on the peer of a split
    topology); read results, leases and requests; the DELs release before the daemon stops."""
    sc = topo.scenario
    assert sc.dhcp is not None
    pool = Pool(sc.dhcp.subnet, sc.dhcp.pool_start, sc.dhcp.pool_end)
    expect_none = cell.expected.lease == "none"
    on_peer = clients_on_peer(topo, [clients_host(sc).name])
    capture = Capture(topo.ns(sc.dhcp.server), sc.node(sc.dhcp.server).ifname)
    try:
        with dhcp_server(cell.server, topo.ns(sc.dhcp.server), sc.node(sc.dhcp.server).ifname,
                         pool, run) as server, \
                (peer_side(topo.peer, cell.daemon, expect_none) if on_peer else
                 plugged_side(topo, run, cell.daemon, expect_none)) as side:
            plugged = list(side.plugged)
            wanted = {p.address.split("/")[0] for p in plugged if p.address}
            deadline = time.monotonic() + LEASE_WAIT_S
            while True:
                leases = server.leases()
                if wanted <= {str(le.address) for le in leases} or time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            requests = tuple(capture.drain())
            server_start_s = server.started_s
            log = f"server: {server.log_tail(4)[-400:]} | daemon: {side.daemon_log}"
    finally:
        capture.close()
    ids, macs = side.ids, side.macs
    stored = tuple(sorted(classify_id(le.client_id, le.hwaddr, dict(ids)) for le in leases))
    lease = _classify(plugged, leases)
    configured = tuple(p.name for p in plugged if p.address)
    detail = "; ".join(f"{p.name}({macs.get(p.name, '-')}): "
                       + (f"ADD {p.address} in {p.seconds:.2f}s" if p.address else
                          f"ADD failed in {p.seconds:.2f}s: {p.error}"
                          + (" [the failed ADD left its link behind]"
                             if p.link_left else ""))
                       for p in plugged)
    detail += " | leases: " + (", ".join(f"{le.address} hw={le.hwaddr} id={le.client_id or '-'}"
                                         for le in leases) or "none")
    detail += " | wire: " + (", ".join(sorted({f"type{r.msg_type} chaddr={r.chaddr} "
                                               f"bcast={int(r.broadcast)}" for r in requests}))
                             or "nothing")
    if lease.startswith("inconsistent") or any(p.error for p in plugged):
        detail += f" | {log}"
    return CniObservation(lease, stored, configured, tuple(plugged), tuple(leases), requests,
                          ids, macs, side.parent_mac, server_start_s, detail,
                          topo.peer.kernel if on_peer else "")
