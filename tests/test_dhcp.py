"""DHCP client-identifier matrix (issue 4): real servers and clients on live datapaths.

Cells come from scenarios/dhcp/matrix.toml (setup x scenario x server option x client);
each builds its topology, starts a fresh server with a fresh lease file, runs the clients
and asserts both what they configured and what the server recorded. ipvlan cells need a
kernel with ipvlan (the VM leg); the host runs the macvlan and ``emulated`` shared-MAC cells.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from linklab import results as store
from linklab.build import build
from linklab.capabilities import missing_link, missing_tool
from linklab.dhcp.cell import TIMEOUT_ATTEMPTS, run_cell
from linklab.dhcp.matrix import DhcpCell, load_matrix
from linklab.model import load_scenario

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = {sc.name: sc for sc in map(load_scenario, sorted(ROOT.glob("scenarios/dhcp-*.toml")))}
CELLS = load_matrix(ROOT / "scenarios" / "dhcp" / "matrix.toml", SCENARIOS)
SERVER_TOOL = {"kea": "kea-dhcp4", "dnsmasq": "dnsmasq"}
CLIENT_TOOL = {"udhcpc": "busybox", "dhclient": "dhclient"}
# a client that cannot bind must give up within its DISCOVER rounds plus process overhead
TIMEOUT_BOUND_S = TIMEOUT_ATTEMPTS * 3 + 5

pytestmark = pytest.mark.connectivity


def _row(cell: DhcpCell, outcome: str, observed: str = "", leases: str = "", detail: str = "",
         lease_s: float | None = None, server_start_s: float | None = None) -> dict:
    exp = cell.expected
    return {"scenario": cell.scenario.name, "setup": cell.setup.name,
            "server": cell.server.split("-", 1)[0], "server_option": cell.server,
            "client": cell.client,
            "client_id": ",".join(f"{k}={v}" for k, v in cell.setup.client_ids.items()),
            "expected": f"{exp.lease} [{' '.join(exp.stored)}]", "observed": observed,
            "outcome": outcome, "leases": leases, "detail": detail,
            "kernel": store.kernel_release(), "virt": store.virtualisation(),
            "lease_s": lease_s, "server_start_s": server_start_s}


@pytest.mark.parametrize("dhcp_cell", CELLS, ids=[c.id for c in CELLS])
def test_dhcp(dhcp_cell: DhcpCell, run, results) -> None:  # noqa: ANN001
    cell = dhcp_cell
    sc = cell.scenario
    why = (missing_tool(SERVER_TOOL[cell.server.split("-", 1)[0]])
           or missing_tool(CLIENT_TOOL[cell.client]) or missing_link(sc.kind, sc.mode, sc.flag))
    if why:
        results.append("dhcp", _row(cell, "skipped", detail=why))
        pytest.skip(why)
    with build(sc, run) as topo:
        seen = run_cell(cell, topo, run)
    observed = f"{seen.lease} [{' '.join(seen.stored)}]"
    leases = "; ".join(f"{le.address} {le.hwaddr} {le.client_id or '-'}" for le in seen.leases)
    ok = seen.lease == cell.expected.lease and seen.stored == cell.expected.stored
    if cell.expected.lease == "none":   # a clean, bounded timeout
        ok = ok and all(r.returncode not in (0, None) and r.seconds <= TIMEOUT_BOUND_S
                        for r in seen.clients)
    results.append("dhcp", _row(cell, "passed" if ok else "failed", observed, leases,
                                seen.detail, round(seen.lease_s, 4),
                                round(seen.server_start_s, 4)))
    assert seen.lease == cell.expected.lease, (
        f"{cell.id}: expected {cell.expected.lease} lease ({cell.expected.why}); observed "
        f"{seen.lease}: {seen.detail}")
    assert seen.stored == cell.expected.stored, (
        f"{cell.id}: expected stored identifiers {list(cell.expected.stored)}, the server "
        f"stored {list(seen.stored)}: {seen.detail}")
    if cell.expected.lease == "none":
        for r in seen.clients:
            assert r.returncode not in (0, None), f"{cell.id}: {r.client} in {r.ns} exited " \
                                                  f"{r.returncode} without a lease"
            assert r.seconds <= TIMEOUT_BOUND_S, f"{cell.id}: {r.client} in {r.ns} took " \
                                                 f"{r.seconds:.1f}s to give up (bound " \
                                                 f"{TIMEOUT_BOUND_S}s)"
