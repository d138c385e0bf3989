"""Run one DHCP matrix cell on a live topology and observe what happened.

A fresh server (and lease file) per cell; the clients run one after the other (c1, then c2)
so the server sees the second client while the first one's lease exists. In a cell expected
to get no lease there is no lease to see: its clients wait out their timeouts side by side
(one thread each, each in its own namespace), so the cell costs one timeout, not one per
client; any lease still fails the cell. The observation
combines what the clients configured (netlink, inside their namespaces) with the server's
lease records, and classifies the identifier stored in each record.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from linklab.build import Topology
from linklab.dhcp.clients import (
    MAC_ID,
    NO_ID,
    ClientResult,
    client_workdir,
    remove_workdir,
    run_client,
)
from linklab.dhcp.leases import Lease
from linklab.dhcp.matrix import DhcpCell
from linklab.dhcp.servers import Pool, dhcp_server
from linklab.ownership import Run
from linklab.suite import time_scale

SCALE = time_scale()
BOUND_ATTEMPTS = 3 + round(SCALE)   # DISCOVER rounds (1 s each) a client expected to bind gets
TIMEOUT_ATTEMPTS = 2                # ... and one expected to time out (unscaled: it must fail)
LEASE_WAIT_S = 2.0 * SCALE          # for the server's lease file to show the bound addresses


@dataclass(frozen=True)
class Observation:
    lease: str                      # same | distinct | none | bound | inconsistent: ...
    stored: tuple[str, ...]
    configured: tuple[str, ...]     # containers that configured the address they were granted
    clients: tuple[ClientResult, ...]
    leases: tuple[Lease, ...]
    server_start_s: float
    lease_s: float                  # the slowest client that bound (0 when none did)
    detail: str
    clients_kernel: str = ""        # the peer's kernel when the clients ran on the peer node


def classify_id(client_id: str | None, mac: str, explicit: dict[str, str]) -> str:
    """The identifier class of a stored client-id: none, mac (01 + MAC), a container's own
    explicit id, or ``other:<hex>``."""
    if client_id is None:
        return "none"
    if client_id == "01:" + mac:
        return "mac"
    for name, cid in explicit.items():
        if cid == client_id:
            return name
    return f"other:{client_id}"


def link_mac(topo: Topology, container: str) -> str:
    ns = topo.ns(container)
    index = ns.ipr.link_lookup(ifname=topo.ifname(container))[0]
    return ns.ipr.get_links(index)[0].get_attr("IFLA_ADDRESS").lower()


def _server_side(topo: Topology) -> tuple[str, str]:
    sc = topo.scenario
    assert sc.dhcp is not None
    if sc.dhcp.server == "host" and sc.bridge is not None:
        return "host", sc.bridge.ifname
    return sc.dhcp.server, sc.node(sc.dhcp.server).ifname


def _classify_lease(results: list[ClientResult], leases: list[Lease]) -> str:
    """same | distinct | none | bound (a single client) | inconsistent: ... from the addresses
    the clients were granted and the server's records."""
    granted = [r for r in results if r.leased]
    if not granted:
        return "none" if not leases else f"inconsistent: no client bound, server holds " \
                                             f"{', '.join(str(le.address) for le in leases)}"
    held = {le.address for le in leases}
    addrs = [r.leased for r in granted]
    missing = [a for a in addrs if a not in held]
    if missing:
        return f"inconsistent: {', '.join(map(str, missing))} granted but not in the lease file"
    if len(results) == 1:
        return "bound"
    if len(granted) < len(results):
        return "inconsistent: only " + ", ".join(r.ns for r in granted) + " got a lease"
    if len(set(addrs)) == 1:
        return "same" if len(leases) == 1 else f"inconsistent: one address, {len(leases)} leases"
    return "distinct" if len(leases) == len(addrs) else \
        f"inconsistent: {len(addrs)} addresses, {len(leases)} leases"


def run_clients(topo: Topology, run: Run, client: str, client_ids: dict[str, str], *,
                broadcast: bool, expect_bound: bool) -> tuple[list[ClientResult], dict[str, str]]:
    """The cell's clients, in the namespaces of this ``topo`` (on a split, the peer agent's
    half runs this for its containers), and the MAC of each client's link."""
    attempts = BOUND_ATTEMPTS if expect_bound else TIMEOUT_ATTEMPTS
    workdir = client_workdir(run)
    try:
        def one(name: str, cid: str) -> ClientResult:
            # pyroute2 0.9 opens an IPRoute's socket per thread, at the thread's first
            # call and in the thread's namespace: a client thread runs inside its own
            with topo.ns(name).enter():
                return run_client(client, topo.ns(name), topo.ifname(name), cid, workdir, run,
                                  attempts_s=attempts, broadcast=broadcast, scaled=expect_bound)

        if expect_bound or len(client_ids) == 1:
            results = [one(name, cid) for name, cid in client_ids.items()]
        else:
            for name in client_ids:
                _ = topo.ns(name).ipr  # ... and this thread's socket opened in the right one
            with ThreadPoolExecutor(len(client_ids), thread_name_prefix="dhcp-client") as side:
                results = list(side.map(one, client_ids, client_ids.values()))
    finally:
        remove_workdir(run, workdir)
    return results, {name: link_mac(topo, name) for name in client_ids}


def clients_on_peer(topo: Topology, names: list[str]) -> bool:
    """A split topology whose clients were built by the peer agent (on node-b)."""
    return getattr(topo, "peer", None) is not None and \
        not any(name in topo.namespaces for name in names)


def run_cell(cell: DhcpCell, topo: Topology, run: Run) -> Observation:
    """Start the cell's server, run its clients (here, or on the peer of a split topology),
    read back addresses and lease records."""
    sc = topo.scenario
    assert sc.dhcp is not None
    server_ns, server_if = _server_side(topo)
    pool = Pool(sc.dhcp.subnet, sc.dhcp.pool_start, sc.dhcp.pool_end)
    expect_bound = cell.expected.lease != "none"
    explicit = {n: cid for n, cid in cell.setup.client_ids.items() if cid not in (NO_ID, MAC_ID)}
    ids = dict(cell.setup.client_ids)
    with dhcp_server(cell.server, topo.ns(server_ns), server_if, pool, run) as server:
        on_peer = clients_on_peer(topo, list(ids))
        if on_peer:
            results, mac = topo.peer.dhcp_clients(cell.client, ids,
                                                  broadcast=cell.broadcast_flag,
                                                  expect_bound=expect_bound)
        else:
            results, mac = run_clients(topo, run, cell.client, ids,
                                       broadcast=cell.broadcast_flag, expect_bound=expect_bound)
        wanted = {r.address.ip for r in results if r.bound}  # type: ignore[union-attr]
        deadline = time.monotonic() + LEASE_WAIT_S
        while True:                      # dnsmasq rewrites its file just after the ACK
            leases = server.leases()
            if wanted <= {le.address for le in leases} or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        server_start_s = server.started_s
        log_tail = server.log_tail(6)
    stored = tuple(sorted(classify_id(le.client_id, le.hwaddr, explicit) for le in leases))
    lease = _classify_lease(results, leases)
    names = list(cell.setup.client_ids)
    configured = tuple(n for n, r in zip(names, results)
                       if r.bound and r.leased == r.address.ip)  # type: ignore[union-attr]
    for r in results:
        if r.bound and (r.address.ip not in pool.subnet  # type: ignore[union-attr]
                        or r.address.ip != r.leased):  # type: ignore[union-attr]
            lease = f"inconsistent: {r.ns} configured {r.address}, granted {r.leased} " \
                    f"(pool {pool.subnet})"
    detail = "; ".join(
        f"{name}({mac[name]}): granted {r.leased or '-'}, configured "
        f"{r.address or 'no address'} exit={r.returncode} "
        f"in {r.seconds:.3f}s" for name, r in zip(cell.setup.client_ids, results))
    detail += " | leases: " + (", ".join(
        f"{le.address} hw={le.hwaddr} id={le.client_id or '-'}" for le in leases) or "none")
    if lease.startswith("inconsistent") or len(configured) < len(results):
        detail += f" | client logs: {' // '.join(r.log[-300:] for r in results)}" \
                  f" | server log: {log_tail[-600:]}"
    return Observation(lease, stored, configured, tuple(results), tuple(leases), server_start_s,
                       max((r.seconds for r in results if r.bound), default=0.0), detail,
                       topo.peer.kernel if on_peer else "")
