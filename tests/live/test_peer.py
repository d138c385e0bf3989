"""Two-host scenarios split across two nodes (linklab.peer), without VMs: two "node"
namespaces joined by a veth pair stand for node-a, node-b and the libvirt L2 between them
(REMOTE_TYPE=netns). node-a's half is built by this process, node-b's by a peer agent started
inside node-b's namespace, from the same scenario file; each cell is observed on the node
holding its source namespace and compared with the scenario's own [expect]."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from linklab.checks import cells, source
from linklab.cmd import cmd
from linklab.model import SHIPPED, load_scenario
from linklab.ownership import Run
from linklab.peer import PeerConfig, PeerError, split_build
from linklab.placement import PlacementError
from linklab.probes import Observer
from linklab.pytest.plugin import host_snapshot
from tests.live.test_dhcp import _cni_missing, _dhcp_missing, _shipped_cell

pytestmark = pytest.mark.two_host



@dataclass
class Nodes:
    a: str
    b: str
    env: Path

    def links(self, node: str) -> dict[str, int]:
        """ifname -> MTU of the node namespace's links (lo and its own eth0/mgmt0 aside)."""
        out = json.loads(cmd(["ip", "-j", "link", "show"], node).stdout)
        return {link["ifname"]: link["mtu"] for link in out
                if link["ifname"] not in ("lo", "eth0", "mgmt0")}

    def write_env(self, **extra: str) -> Path:
        lines = {"LINKLAB_REMOTE_TYPE": "netns", "LINKLAB_REMOTE_ARGS": self.b,
                 "LINKLAB_PARENT_IF": "l2a", "LINKLAB_PARENT_NETNS": f"/run/netns/{self.a}",
                 "LINKLAB_PEER_PARENT_IF": "l2b",
                 "LINKLAB_PEER_PARENT_NETNS": f"/run/netns/{self.b}"} | extra
        self.env.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))
        return self.env


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    """Function scope; none. Two node namespaces (owned by a record of their own) joined by
    the veth pair l2a/l2b, the stand-in for the libvirt L2, each with an eth0 of its own (as
    a VM has: the lent NIC, named eth0 in host2's namespace, must come home beside it);
    checks on exit that both NICs are back home under their names and MTU, and the default
    namespace is unchanged."""
    before = host_snapshot()
    owner = Run()
    a, b = owner.ns_name("nodeA"), owner.ns_name("nodeB")
    n = Nodes(a, b, tmp_path / "node.env")
    try:
        for name in (a, b):
            owner.own_namespace(name)
            cmd(["ip", "netns", "add", name])
        cmd(["ip", "-n", a, "link", "add", "l2a", "type", "veth", "peer", "name", "l2b",
             "netns", b])
        cmd(["ip", "-n", a, "link", "set", "l2a", "up"])
        cmd(["ip", "-n", b, "link", "set", "l2b", "up"])
        for name in (a, b):   # each node's own eth0 (a VM's management NIC): the scenarios
            cmd(["ip", "-n", name, "link", "add", "eth0", "type", "veth", "peer", "name",
                 "mgmt0"])                 # name theirs eth0 (no dummy module here: a veth)
        n.write_env()
        yield n
        assert n.links(a) == {"l2a": 1500} and n.links(b) == {"l2b": 1500}
    finally:
        for name in (b, a):
            cmd(["ip", "netns", "del", name], check=False)
            owner.disown_namespace(name)
        owner.close()
    assert host_snapshot() == before


def observe_all(topo: object) -> dict[str, tuple[str, str, str]]:
    """cell id -> (expected, observed, detail) for every cell of the live split topology."""
    sc = topo.scenario  # type: ignore[attr-defined]
    obs = Observer(topo, cells(sc))  # type: ignore[arg-type]
    out = {}
    for cell in cells(sc):
        seen = obs.observe(cell)
        out[cell.id] = (cell.expected, seen.result, seen.detail)
    return out


@pytest.mark.parametrize("name, peer_host", [
    ("twohost-macvlan", "host2"), ("twohost-bridge", "host2"), ("twohost-veth", "host2"),
    ("twohost-macvlan", "host1"),   # c1 on the peer: its cells are probed on node-b
])
def test_split_cells_pass_with_the_scenarios_own_expectations(nodes: Nodes, run: Run,
                                                              name: str, peer_host: str,
                                                              netns_names) -> None:
    sc = load_scenario(SHIPPED / f"{name}.toml")
    cfg = PeerConfig.from_env(nodes.write_env(LINKLAB_PEER_HOSTS=peer_host))
    with split_build(sc, run, cfg) as topo:
        built = {ns.name for ns in topo.namespaces.values()} | set(topo.peer.namespaces)
        assert built <= netns_names()
        # the placed host and its containers live on node-b only; the NICs were lent
        on_peer = {peer_host, *(c.name for c in sc.containers_of(peer_host))}
        assert not on_peer & set(topo.namespaces)
        assert {"upstream", "remote"} <= set(topo.namespaces)
        assert nodes.links(nodes.a) == {} and nodes.links(nodes.b) == {}
        assert topo.peer.kernel == os.uname().release
        seen = observe_all(topo)
        peer_sourced = [c.id for c in cells(sc) if source(sc, c) in on_peer]
    wrong = {cid: s for cid, s in seen.items() if s[0] != s[1]}
    assert not wrong, wrong
    assert len(seen) == 21
    if peer_host == "host1":
        assert len(peer_sourced) == 19     # all but host-netfilter v4/v6 (from upstream)
    else:
        assert peer_sourced == []
        # c2's receivers are on node-b: the broadcast and multicast answers came from there
        for cid in (f"{name}-v4-broadcast", f"{name}-l2-multicast"):
            assert seen[cid][1] != "pass" or "received on the peer" in seen[cid][2]
    assert not built & netns_names()


def test_a_bad_placement_names_the_scenario_and_the_host(nodes: Nodes, run: Run,
                                                         netns_names) -> None:
    sc = load_scenario(SHIPPED / "twohost-macvlan.toml")
    cfg = PeerConfig.from_env(nodes.write_env(LINKLAB_PEER_HOSTS="host3"))
    with pytest.raises(PlacementError, match=r"twohost-macvlan.toml: scenario twohost-macvlan: "
                                             r"placement names host 'host3'.*host1, host2"), \
            split_build(sc, run, cfg):
        pass
    cfg = PeerConfig.from_env(nodes.write_env(LINKLAB_PEER_HOSTS="host1,host2"))
    with pytest.raises(PlacementError, match="place exactly one host on the peer"), \
            split_build(sc, run, cfg):
        pass
    one = load_scenario(SHIPPED / "macvlan-bridge.toml")
    with pytest.raises(PlacementError, match=r"macvlan-bridge has one host \(host\)"), \
            split_build(one, run, PeerConfig.from_env(nodes.write_env())):
        pass
    assert not any(n.startswith(f"ll{run.marker}-") for n in netns_names())


def test_a_missing_peer_nic_fails_the_agent_and_leaves_nothing(nodes: Nodes, run: Run,
                                                               netns_names) -> None:
    sc = load_scenario(SHIPPED / "twohost-macvlan.toml")
    cfg = PeerConfig.from_env(nodes.write_env(LINKLAB_PEER_PARENT_IF="eth9"))
    with pytest.raises(PeerError, match=r"twohost-macvlan: host2\).*build: twohost-macvlan: "
                                        r"host2: uplink NIC eth9 not found") as err, \
            split_build(sc, run, cfg):
        pass
    marker = err.value.marker
    assert marker and not any(n.startswith(f"ll{marker}-") for n in netns_names())
    assert not os.path.exists(f"/run/linklab/{marker}.jsonl")   # its record: nothing left


HOLDER = textwrap.dedent("""
    import ctypes, signal; ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    import sys, time
    from pathlib import Path
    from linklab.model import SHIPPED, load_scenario
    from linklab.ownership import Run
    from linklab.peer import PeerConfig, split_build
    run = Run()
    cfg = PeerConfig.from_env(Path(sys.argv[2]))
    with split_build(load_scenario(sys.argv[1]), run, cfg) as topo:
        print(run.marker, topo.peer.proc.pid, topo.peer.marker, flush=True)
        time.sleep(120)
""")


def test_kill_9_of_both_nodes_processes_then_clean_leaves_nothing(nodes: Nodes,
                                                                  netns_names) -> None:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER,
                             str(SHIPPED / "twohost-bridge.toml"), str(nodes.env)],
                            text=True, stdout=subprocess.PIPE)
    try:
        marker, agent, agent_marker = proc.stdout.readline().split()  # type: ignore[union-attr]
        assert nodes.links(nodes.a) == {} and nodes.links(nodes.b) == {}   # both NICs lent
        ours = (f"ll{marker}-", f"ll{agent_marker}-")
        built = {n for n in netns_names() if n.startswith(ours)}
        assert {n.split("-", 1)[1] for n in built} == {"upstream", "remote", "host1", "c1",
                                                         "host2", "c2"}
        os.kill(int(agent), signal.SIGKILL)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        proc.kill()
    subprocess.run([sys.executable, "-m", "linklab.cli", "clean"], check=True,
                   capture_output=True)
    assert not built & netns_names()
    # the lent NICs came back to their node namespaces, under their names and MTU
    assert nodes.links(nodes.a) == {"l2a": 1500} and nodes.links(nodes.b) == {"l2b": 1500}


# a process lending node-b's NIC that is killed mid-move: after the NIC left home under its
# passing name, before it got its lent name (the third namespace socket: the move's target)
HALF_MOVED = textwrap.dedent("""
    import os, signal, sys
    from linklab.cmd import cmd
    from linklab.ownership import Run
    from linklab.twohost import uplink
    opened, real = [], uplink._ipr_in
    def dying(path):
        opened.append(path)
        if len(opened) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path)
    uplink._ipr_in = dying
    run = Run()
    ns = run.ns_name("host2")
    run.own_namespace(ns)
    cmd(["ip", "netns", "add", ns])
    uplink.adopt(run, uplink.Uplink("l2b", sys.argv[1]), ns, "eth0", 1500, "half-moved")
""")


def test_a_nic_killed_mid_move_goes_back_with_clean(nodes: Nodes) -> None:
    """A peer agent killed as its half was built: the NIC was in the host's namespace under
    its passing name, which the record now names (before, clean found no NIC of the lent
    name, deleted the namespace and the node's NIC with it: every later agent failed)."""
    proc = subprocess.run([sys.executable, "-c", HALF_MOVED, f"/run/netns/{nodes.b}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert nodes.links(nodes.b) == {}           # l2b left home, not yet lent
    subprocess.run([sys.executable, "-m", "linklab.cli", "clean"], check=True,
                   capture_output=True)
    assert nodes.links(nodes.b) == {"l2b": 1500}


def test_a_lent_nic_goes_back_in_its_old_state(nodes: Nodes, run: Run) -> None:
    cmd(["ip", "-n", nodes.a, "link", "set", "l2a", "down"])
    cmd(["ip", "-n", nodes.a, "link", "set", "l2a", "mtu", "1450"])
    sc = load_scenario(SHIPPED / "twohost-veth.toml")
    with split_build(sc, run, PeerConfig.from_env(nodes.env)) as topo:
        port = topo.ns("upstream").ipr.get_links(ifname="l2a")[0]
        assert port.get_attr("IFLA_MTU") == sc.mtu and port["flags"] & 1   # up, scenario MTU
    link = json.loads(cmd(["ip", "-j", "link", "show", "l2a"], nodes.a).stdout)[0]
    assert "UP" not in link["flags"] and link["mtu"] == 1450
    cmd(["ip", "-n", nodes.a, "link", "set", "l2a", "mtu", "1500", "up"])


@pytest.mark.connectivity        # so the VM leg (ipvlan) runs the ipvlan ones too
@pytest.mark.parametrize("scenario, setup, server, client", [
    ("dhcp-twohost-macvlan", "C", "kea-match-client-id", "udhcpc"),
    ("dhcp-twohost-macvlan", "C", "dnsmasq-default", "dhclient"),
    ("dhcp-twohost-ipvlan-l2", "B", "dnsmasq-default", "udhcpc"),   # distinct ids, one MAC
    ("dhcp-twohost-ipvlan-l2", "A", "kea-no-match-client-id", "udhcpc"),  # one MAC, one lease
])
def test_dhcp_split_serves_clients_on_the_peer(nodes: Nodes, run: Run, netns_names,
                                                scenario: str, setup: str, server: str,
                                                client: str) -> None:
    """A DHCP cell split across the nodes: the server's host stays on node-a, the clients'
    host (whatever LINKLAB_PEER_HOSTS says) is built by the agent on node-b, whose clients ask
    across the wire; the outcome is the one-machine matrix's expectation."""
    from linklab.dhcp.cell import run_cell

    cell = _shipped_cell(scenario, client, server, setup)
    sc = cell.scenario
    if why := _dhcp_missing(cell):
        pytest.skip(why)
    cfg = PeerConfig.from_env(nodes.write_env(LINKLAB_PEER_HOSTS="host2"))
    with split_build(sc, run, cfg) as topo:
        assert {"host2", "upstream"} <= set(topo.namespaces)      # the server's side: here
        assert not {"host1", "c1", "c2"} & set(topo.namespaces)   # the clients: on node-b
        seen = run_cell(cell, topo, run)
        built = {ns.name for ns in topo.namespaces.values()} | set(topo.peer.namespaces)
    assert (seen.lease, seen.stored) == (cell.expected.lease, cell.expected.stored), seen.detail
    assert seen.configured == cell.expected_configured, seen.detail
    assert seen.clients_kernel == os.uname().release
    assert {r.ns for r in seen.clients} <= built
    assert not built & netns_names()


def test_a_dhcp_server_placed_on_the_peer_is_refused(nodes: Nodes, run: Run) -> None:
    from linklab.twohost.placement import place

    sc = load_scenario(SHIPPED / "dhcp-twohost-macvlan.toml")
    with pytest.raises(PlacementError, match=r"dhcp-twohost-macvlan.toml: scenario "
                                             r"dhcp-twohost-macvlan: the DHCP server \(host2\) "
                                             r"stays on this node.*place host1, not host2"):
        place(sc, ["host2"])
    assert place(sc, ["host1"]).on_peer("c2")


@pytest.mark.connectivity
@pytest.mark.parametrize("scenario, server, daemon", [
    ("dhcp-cni-twohost-macvlan", "dnsmasq-default", "plain"),
    ("dhcp-cni-twohost-macvlan", "kea-no-match-client-id", "plain"),
    ("dhcp-cni-twohost-ipvlan-l2", "dnsmasq-default", "broadcast"),   # one MAC, two ids
])
def test_cni_dhcp_split_plugs_on_the_peer(nodes: Nodes, run: Run, netns_names, scenario: str,
                                          server: str, daemon: str) -> None:
    """The CNI dhcp plugin as the client across two nodes: the daemon and the ADDs run in the
    agent's host namespace on node-b, the server and the capture on node-a; the documented
    client-id reaches the server across the wire; DEL releases before the daemon stops."""
    from linklab.dhcp.cni import CNI_MATRIX_FILE, load_cni_matrix, run_cni_cell
    from linklab.model import load_all

    scenarios = {sc.name: sc for sc in load_all(SHIPPED)}
    cell = next(c for c in load_cni_matrix(CNI_MATRIX_FILE, scenarios)
                if c.scenario.name == scenario and c.server == server and c.daemon == daemon)
    sc = cell.scenario
    if why := _cni_missing(cell):
        pytest.skip(why)
    with split_build(sc, run, PeerConfig.from_env(nodes.write_env())) as topo:
        assert not {"host1", "c1", "c2"} & set(topo.namespaces)
        seen = run_cni_cell(cell, topo, run)
        built = {ns.name for ns in topo.namespaces.values()} | set(topo.peer.namespaces)
    assert (seen.lease, seen.stored) == (cell.expected.lease, cell.expected.stored), seen.detail
    assert seen.clients_kernel == os.uname().release
    assert {r.client_id for r in seen.requests} <= set(seen.expected_ids.values()), seen.detail
    assert seen.requests, f"no request crossed the wire: {seen.detail}"
    assert not built & netns_names()
