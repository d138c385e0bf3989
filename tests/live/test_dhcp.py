"""DHCP client-identifier matrix (issue 4): real servers and clients on live datapaths.

Cells come from scenarios/dhcp/matrix.toml (setup x scenario x server option x client);
each builds its topology, starts a fresh server with a fresh lease file, runs the clients
and asserts both what they configured and what the server recorded. ipvlan cells need a
kernel with ipvlan (the VM leg); the host runs the macvlan and ``emulated`` shared-MAC cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from linklab import cni as cni_mod
from linklab import results as store
from linklab.build import build
from linklab.capabilities import missing_link, missing_tool
from linklab.dhcp.cell import SCALE, TIMEOUT_ATTEMPTS, run_cell
from linklab.dhcp.cell import Observation as DhcpObservation
from linklab.dhcp.cni import (
    CNI_MATRIX_FILE,
    DISCOVER,
    REQUEST,
    CniDhcpCell,
    CniObservation,
    load_cni_matrix,
    run_cni_cell,
)
from linklab.dhcp.matrix import DhcpCell, load_matrix
from linklab.model import ScenarioError
from linklab.ownership import Run
from linklab.pytest.ahead import Ahead, cells_ahead
from linklab.pytest.plugin import dhcp_matrix_files, matrix_scenarios, results_part
from linklab.twohost.peer import PeerConfig, split_build

SERVER_TOOL = {"kea": "kea-dhcp4", "dnsmasq": "dnsmasq"}
CLIENT_TOOL = {"udhcpc": "busybox", "dhclient": "dhclient"}
# a client that cannot bind must give up within its DISCOVER rounds plus process overhead
TIMEOUT_BOUND_S = (TIMEOUT_ATTEMPTS * 2 + 3) * SCALE

pytestmark = pytest.mark.connectivity



def assert_lease_and_stored(cell: DhcpCell | CniDhcpCell,
                            seen: DhcpObservation | CniObservation) -> None:
    """The lease the cell expects, and the client identifiers the server stored."""
    assert seen.lease == cell.expected.lease, (
        f"{cell.id}: expected {cell.expected.lease} lease ({cell.expected.why}); observed "
        f"{seen.lease}: {seen.detail}")
    assert seen.stored == cell.expected.stored, (
        f"{cell.id}: expected stored identifiers {list(cell.expected.stored)}, the server "
        f"stored {list(seen.stored)}: {seen.detail}")


def _row(cell: DhcpCell, outcome: str, observed: str = "", leases: str = "", detail: str = "",
         lease_s: float | None = None, server_start_s: float | None = None,
         clients_kernel: str = "") -> dict:
    exp = cell.expected
    return {"scenario": cell.scenario.name, "setup": cell.setup.name,
            "server": cell.server.split("-", 1)[0], "server_option": cell.server,
            "client": cell.client,
            "client_id": ",".join(f"{k}={v}" for k, v in cell.setup.client_ids.items()),
            "expected": f"{exp.lease} [{' '.join(exp.stored)}]", "observed": observed,
            "outcome": outcome, "leases": leases, "detail": detail,
            "kernel": store.kernel_release(), "virt": store.virtualisation(),
            "lease_s": lease_s, "server_start_s": server_start_s,
            "clients_kernel": clients_kernel}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``dhcp_cell``: every cell of the DHCP matrix beside ``--scenarios`` (or
    ``--dhcp-matrix``), run on those scenarios."""
    if "cni_cell" in metafunc.fixturenames:
        found = _cni_cells(metafunc.config)
        none = pytest.mark.skip(reason="no CNI DHCP matrix: no dhcp/cni.toml beside --scenarios")
        metafunc.parametrize("cni_cell", [
            pytest.param(c, id=c.id, marks=[pytest.mark.two_host] * (len(c.scenario.hosts) > 1))
            for c in found] or [pytest.param(None, id="no-matrix", marks=none)])
    if "dhcp_cell" not in metafunc.fixturenames:
        return
    config = metafunc.config
    files = dhcp_matrix_files(config)
    scenarios = {sc.name: sc for sc in matrix_scenarios(config)}
    try:
        found = [c for f in files for c in load_matrix(f, scenarios)]
    except ScenarioError as exc:
        raise pytest.UsageError(f"DHCP matrix: {exc}") from None
    none = pytest.mark.skip(reason="no DHCP matrix: no dhcp/matrix.toml beside --scenarios "
                                   "and no --dhcp-matrix")
    cases = [pytest.param(c, id=c.id, marks=[pytest.mark.two_host] * (len(c.scenario.hosts) > 1))
             for c in found] or [pytest.param(None, id="no-matrix", marks=none)]
    metafunc.parametrize("dhcp_cell", cases)


def _shipped_cell(scenario: str, client: str, server: str, setup: str | None = None) -> DhcpCell:
    """A cell of the shipped DHCP matrix (for tests that run one cell by hand)."""
    from linklab.dhcp.matrix import MATRIX_FILE
    from linklab.model import SHIPPED, load_all

    scenarios = {sc.name: sc for sc in load_all(SHIPPED)}
    return next(c for c in load_matrix(MATRIX_FILE, scenarios) if c.scenario.name == scenario
                and c.client == client and c.server == server
                and setup in (None, c.setup.name))


def _cni_cells(config: pytest.Config) -> list[CniDhcpCell]:
    """The CNI dhcp cells: every ``dhcp/cni.toml`` beside a DHCP matrix of ``--scenarios``."""
    scenarios = {sc.name: sc for sc in matrix_scenarios(config)}
    files = [f.parent / CNI_MATRIX_FILE.name for f in dhcp_matrix_files(config)]
    try:
        return [c for f in files if f.is_file() for c in load_cni_matrix(f, scenarios)]
    except ScenarioError as exc:
        raise pytest.UsageError(f"CNI DHCP matrix: {exc}") from None


def _cni_missing(cell: CniDhcpCell) -> str | None:
    """The server, the link kind or the CNI dhcp plugin this machine lacks, by name."""
    sc = cell.scenario
    why = (missing_tool(SERVER_TOOL[cell.server.split("-", 1)[0]])
           or missing_link(sc.kind, sc.mode, sc.flag))
    if not why:
        try:
            cni_mod.plugin_path("dhcp")
        except cni_mod.CniError as exc:
            why = exc.msg
    return why


def _dhcp_missing(cell: DhcpCell) -> str | None:
    sc = cell.scenario
    return (missing_tool(SERVER_TOOL[cell.server.split("-", 1)[0]])
            or missing_tool(CLIENT_TOOL[cell.client]) or missing_link(sc.kind, sc.mode, sc.flag))


def _split_env(config: pytest.Config, cell: DhcpCell | CniDhcpCell) -> Path | None:
    """``--remote-env`` for a two-host cell: its server here, its clients on the peer node."""
    env = config.getoption("--remote-env")
    return Path(env) if env and len(cell.scenario.hosts) > 1 else None


def _observe_alone(cell: DhcpCell, remote_env: Path | None = None) -> DhcpObservation:
    """One cell with an ownership record (and so namespace names) of its own, for a thread;
    split across two nodes with ``remote_env``."""
    own = Run()
    try:
        with (split_build(cell.scenario, own, PeerConfig.from_env(remote_env)) if remote_env
              else build(cell.scenario, own)) as topo:
            return run_cell(cell, topo, own)
    finally:
        own.close()


@pytest.fixture(scope="session")
def dhcp_ahead(request: pytest.FixtureRequest, run) -> Iterator[Ahead]:
    """With ``--cells-ahead N``: every selected DHCP cell that will run is started here, N at
    a time, in the session's order."""
    ahead = Ahead(cells_ahead(request.config))
    for item in request.session.items:
        cell = getattr(item, "callspec", None) and item.callspec.params.get("dhcp_cell")
        if isinstance(cell, DhcpCell) and not _dhcp_missing(cell) and \
                not _split_env(request.config, cell):    # one lent NIC per node: in turn
            ahead.submit(cell.id, partial(_observe_alone, cell))
    yield ahead
    ahead.close()


def test_dhcp(dhcp_cell: DhcpCell, run, results, request, dhcp_ahead: Ahead) -> None:
    cell = dhcp_cell
    part = results_part(request.config)
    why = _dhcp_missing(cell)
    if why:
        results.append("dhcp", _row(cell, "skipped", detail=why), part=part)
        pytest.skip(why)
    seen = dhcp_ahead.result(cell.id, partial(_observe_alone, cell,
                                              _split_env(request.config, cell)))
    observed = f"{seen.lease} [{' '.join(seen.stored)}]"
    leases = "; ".join(f"{le.address} {le.hwaddr} {le.client_id or '-'}" for le in seen.leases)
    ok = (seen.lease, seen.stored, seen.configured) == \
        (cell.expected.lease, cell.expected.stored, cell.expected_configured)
    if cell.expected.lease == "none":   # a clean, bounded timeout
        ok = ok and all(r.timed_out and r.seconds <= TIMEOUT_BOUND_S for r in seen.clients)
    results.append("dhcp", _row(cell, "passed" if ok else "failed", observed, leases,
                                seen.detail, round(seen.lease_s, 4),
                                round(seen.server_start_s, 4), seen.clients_kernel), part=part)
    assert_lease_and_stored(cell, seen)
    assert seen.configured == cell.expected_configured, (
        f"{cell.id}: expected {list(cell.expected_configured)} to configure their address, "
        f"observed {list(seen.configured)}: {seen.detail}")
    if cell.expected.lease == "none":
        for r in seen.clients:
            assert r.timed_out, f"{cell.id}: {r.client} in {r.ns} did not time out cleanly " \
                                f"(exit {r.returncode}): {r.log[-500:]}"
            assert r.seconds <= TIMEOUT_BOUND_S, f"{cell.id}: {r.client} in {r.ns} took " \
                                                 f"{r.seconds:.1f}s to give up (bound " \
                                                 f"{TIMEOUT_BOUND_S}s)"


# ---- servers that cannot start -------------------------------------------------------------

@pytest.fixture
def server_ns(run):
    """A lone namespace with one addressed veth (``srv0``) for a server to bind to."""
    from linklab.netns import NetNS

    name = run.ns_name("dhcpsrv")
    run.own_namespace(name)
    ns = NetNS(name)
    try:
        ns.ipr.link("add", ifname="srv0", kind="veth", peer={"ifname": "srv1"})
        for ifname in ("lo", "srv0", "srv1"):
            ns.ipr.link("set", index=ns.ipr.link_lookup(ifname=ifname)[0], state="up")
        ns.ipr.addr("add", index=ns.ipr.link_lookup(ifname="srv0")[0], address="198.18.20.1",
                    prefixlen=24)
        yield ns
    finally:
        ns.close()
        run.disown_namespace(name)


def _pool():
    import ipaddress

    from linklab.dhcp.servers import Pool
    return Pool(ipaddress.IPv4Network("198.18.20.0/24"), ipaddress.IPv4Address("198.18.20.100"),
                ipaddress.IPv4Address("198.18.20.150"))


@pytest.mark.parametrize("option", ["kea-match-client-id", "dnsmasq-default"])
def test_dhcp_server_port_taken(option: str, server_ns, run) -> None:
    """Port 67 already bound in the namespace: a ServerError with the server's log tail,
    and nothing left behind (no process, no work dir)."""
    import os
    import socket

    from linklab.dhcp.servers import ServerError, dhcp_server
    if why := missing_tool(SERVER_TOOL[option.split("-", 1)[0]]):
        pytest.skip(why)
    with server_ns.enter():
        blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        blocker.bind(("0.0.0.0", 67))
        with pytest.raises(ServerError) as err, \
                dhcp_server(option, server_ns, "srv0", _pool(), run, ready_timeout_s=1.0):
            pass
    finally:
        blocker.close()
    message = str(err.value)
    assert "UDP port 67" in message and "log tail:" in message, message
    assert message.split("log tail:", 1)[1].strip() not in ("", "(empty log)", "(no log)")
    leftover = [p for p in os.listdir("/tmp") if p.startswith(f"linklab-{run.marker}-dhcp-")]
    assert leftover == []


@pytest.mark.parametrize("option", ["kea-match-client-id", "dnsmasq-default"])
def test_dhcp_server_bad_config(option: str, server_ns, run, monkeypatch) -> None:
    """A configuration the server itself rejects: ServerError with the exit status and the
    server's own complaint in the log tail."""
    from linklab.dhcp import servers
    if why := missing_tool(SERVER_TOOL[option.split("-", 1)[0]]):
        pytest.skip(why)
    monkeypatch.setattr(servers, "kea_config", lambda *a, **k: {"Dhcp4": {"no-such-key": 1}})
    real_argv = servers.dnsmasq_argv
    monkeypatch.setattr(servers, "dnsmasq_argv",
                        lambda *a, **k: [*real_argv(*a, **k), "--dhcp-range=bogus"])
    with pytest.raises(servers.ServerError) as err, \
            servers.dhcp_server(option, server_ns, "srv0", _pool(), run):
        pass
    message = str(err.value)
    assert "exited with status" in message, message
    assert ("no-such-key" in message) if option.startswith("kea") else ("bogus" in message or
                                                                          "range" in message), \
        message


@pytest.mark.parametrize("option", ["kea-match-client-id", "dnsmasq-default"])
def test_dhcp_server_bad_interface(option: str, server_ns, run) -> None:
    """A server told to serve an interface that does not exist fails with its log tail."""
    from linklab.dhcp.servers import ServerError, dhcp_server
    if why := missing_tool(SERVER_TOOL[option.split("-", 1)[0]]):
        pytest.skip(why)
    with pytest.raises(ServerError) as err, \
            dhcp_server(option, server_ns, "nosuch0", _pool(), run, ready_timeout_s=1.0):
        pass
    assert "'nosuch0' does not exist" in str(err.value), str(err.value)
    with pytest.raises(ServerError, match="no address in the served subnet 198.18.20.0/24"), \
            dhcp_server(option, server_ns, "srv1", _pool(), run, ready_timeout_s=1.0):
        pass


# ---- the CNI dhcp IPAM plugin as the client (issue 15) -------------------------------------

# an ADD expected to fail must fail within the daemon's retry budget plus process overhead
CNI_TIMEOUT_BOUND_S = 30 * SCALE


def _cni_row(cell: CniDhcpCell, outcome: str, observed: str = "", leases: str = "",
             detail: str = "", lease_s: float | None = None,
             server_start_s: float | None = None, clients_kernel: str = "") -> dict:
    exp = cell.expected
    return {"scenario": cell.scenario.name, "setup": cell.setup.name,
            "server": cell.server.split("-", 1)[0], "server_option": cell.server,
            "client": cell.client, "client_id": "c1=cni,c2=cni",
            "expected": f"{exp.lease} [{' '.join(exp.stored)}]", "observed": observed,
            "outcome": outcome, "leases": leases, "detail": detail,
            "kernel": store.kernel_release(), "virt": store.virtualisation(),
            "lease_s": lease_s, "server_start_s": server_start_s,
            "clients_kernel": clients_kernel}


def test_cni_dhcp(cni_cell: CniDhcpCell, run, results, request) -> None:
    """The reference dhcp IPAM plugin behind macvlan/ipvlan: leases, stored ids, and on the
    wire the documented client-id, the interface MAC as chaddr and the broadcast flag only
    with ``-broadcast``."""
    cell = cni_cell
    part = results_part(request.config)
    sc = cell.scenario
    if why := _cni_missing(cell):
        results.append("dhcp", _cni_row(cell, "skipped", detail=why), part=part)
        pytest.skip(why)
    env = _split_env(request.config, cell)
    with (split_build(sc, run, PeerConfig.from_env(env)) if env else build(sc, run)) as topo:
        seen = run_cni_cell(cell, topo, run)
    observed = f"{seen.lease} [{' '.join(seen.stored)}]"
    leases = "; ".join(f"{le.address} {le.hwaddr} {le.client_id or '-'}" for le in seen.leases)
    expected_configured = () if cell.expected.lease == "none" else \
        ("c1",) if cell.expected.lease in ("same", "released") and sc.mode.startswith("ipvlan") \
        else tuple(c.name for c in sc.containers)
    asks = [r for r in seen.requests if r.msg_type in (DISCOVER, REQUEST)]
    wire_ids = {r.client_id for r in seen.requests}
    # chaddr: the interface's MAC; on ipvlan (whose failed ADD leaves no link to read) the
    # parent's, which every slave shares
    macs = {seen.parent_mac} if sc.mode.startswith("ipvlan") else set(seen.macs.values())
    reach = cell.setup.requests_reach_server
    wire_ok = (bool(asks) and wire_ids <= set(seen.expected_ids.values()) and
               all(r.broadcast == (cell.daemon == "broadcast") for r in asks) and
               {r.chaddr for r in seen.requests} <= macs) if reach else not seen.requests
    ok = (seen.lease, seen.stored, seen.configured) == \
        (cell.expected.lease, cell.expected.stored, expected_configured) and wire_ok
    if cell.expected.lease == "none":
        ok = ok and all(p.error and p.seconds <= CNI_TIMEOUT_BOUND_S for p in seen.plugged)
    bound = [p.seconds for p in seen.plugged if p.address]
    results.append("dhcp", _cni_row(cell, "passed" if ok else "failed", observed, leases,
                                    seen.detail, round(max(bound), 4) if bound else 0.0,
                                    round(seen.server_start_s, 4), seen.clients_kernel),
                   part=part)
    if not reach:
        assert not seen.requests, (f"{cell.id}: expected no request on the wire "
                                   f"({cell.setup.why_no_request}): {seen.detail}")
    assert not reach or asks, f"{cell.id}: no DHCP request reached the server: {seen.detail}"
    assert wire_ids <= set(seen.expected_ids.values()), (
        f"{cell.id}: client-ids on the wire {sorted(map(str, wire_ids))}, documented "
        f"{sorted(seen.expected_ids.values())}")
    assert {r.chaddr for r in seen.requests} <= macs, (
        f"{cell.id}: chaddr {sorted({r.chaddr for r in seen.requests})} is not the interface "
        f"MAC {sorted(macs)}: {seen.detail}")
    assert not reach or {r.broadcast for r in asks} == {cell.daemon == "broadcast"}, (
        f"{cell.id}: broadcast flag in DISCOVER/REQUEST {sorted({r.broadcast for r in asks})} "
        f"with the {cell.daemon} daemon")
    assert_lease_and_stored(cell, seen)
    assert seen.configured == expected_configured, (
        f"{cell.id}: expected {list(expected_configured)} to be plugged with an address, "
        f"observed {list(seen.configured)}: {seen.detail}")
    if cell.expected.lease == "none":
        for p in seen.plugged:
            assert p.error and p.seconds <= CNI_TIMEOUT_BOUND_S, (
                f"{cell.id}: {p.name}'s ADD took {p.seconds:.1f}s to fail (bound "
                f"{CNI_TIMEOUT_BOUND_S}s): {p.error}")

# ---- how a cell schedules its clients -------------------------------------------------------

@pytest.mark.parametrize("lease", ["none", "distinct"])
def test_dhcp_clients_side_by_side_only_without_lease(lease: str, run, monkeypatch) -> None:
    """A cell expected to get no lease runs its clients at the same time (one timeout for
    the cell); a cell expected to lease runs them one after the other (c2 sees c1's lease)."""
    import dataclasses
    import threading
    import time

    from linklab.dhcp import cell as cellmod
    from linklab.dhcp.clients import ClientResult
    from linklab.dhcp.matrix import Expected

    base = _shipped_cell("dhcp-macvlan", "udhcpc", "dnsmasq-default")
    if why := missing_tool("dnsmasq") or missing_link("macvlan", "bridge", None):
        pytest.skip(why)
    cell = dataclasses.replace(base, expected=Expected(lease, (), "scheduling test"))
    spans: dict[str, tuple[float, float]] = {}

    def fake_client(client, ns, ifname, client_id, workdir, run, **kw) -> ClientResult:
        start = time.monotonic()
        time.sleep(0.5)
        spans[ns.name] = (start, time.monotonic())
        assert kw["scaled"] == (lease != "none")
        return ClientResult(client, ns.name, ifname, 1, None, 0.5,
                            f"no lease, failing ({threading.current_thread().name})")

    monkeypatch.setattr(cellmod, "run_client", fake_client)
    with build(cell.scenario, run) as topo:
        seen = cellmod.run_cell(cell, topo, run)
    (_, a1), (b0, _) = sorted(spans.values())
    assert len(seen.clients) == 2 and seen.lease == "none"
    if lease == "none":
        assert b0 < a1, f"clients ran one after the other: {spans}"
    else:
        assert b0 >= a1, f"clients overlapped: {spans}"


def test_dhcp_lease_in_a_no_lease_cell_is_seen(run) -> None:
    """Clients run side by side (a cell expected to get no lease) that do get leases: the
    observation says so, and the cell's assertion would fail on it."""
    import dataclasses

    from linklab.dhcp.matrix import Expected

    base = _shipped_cell("dhcp-macvlan", "udhcpc", "dnsmasq-default")
    if why := missing_tool("dnsmasq") or missing_tool("busybox") or \
            missing_link("macvlan", "bridge", None):
        pytest.skip(why)
    cell = dataclasses.replace(base, expected=Expected("none", (), "wrongly expected"))
    with build(cell.scenario, run) as topo:
        seen = run_cell(cell, topo, run)
    assert seen.lease == "distinct" and seen.configured == ("c1", "c2"), seen.detail
    # read back in the right namespaces (pyroute2 opens a socket per thread): each container's
    # own MAC, the one its lease records
    hw = {le.address: le.hwaddr for le in seen.leases}
    for name, r in zip(("c1", "c2"), seen.clients):
        assert f"{name}({hw[r.leased]})" in seen.detail, seen.detail
