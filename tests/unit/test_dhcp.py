"""DHCP building blocks without a network: lease parsers, generated configs and argv,
the client-id matrix loader and its errors."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from linklab.dhcp import clients, matrix, servers
from linklab.dhcp.cell import classify_id
from linklab.dhcp.leases import LeaseFileError, parse_dnsmasq, parse_kea_csv, read_leases
from linklab.model import SHIPPED, ScenarioError, load_scenario

SCENARIOS = {sc.name: sc for sc in map(load_scenario, sorted(SHIPPED.glob("dhcp-*.toml")))}
POOL = servers.Pool(ipaddress.IPv4Network("198.18.20.0/24"),
                    ipaddress.IPv4Address("198.18.20.100"), ipaddress.IPv4Address("198.18.20.150"))

KEA_HEADER = ("address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,"
              "hostname,state,user_context\n")


# ---- lease parsers -------------------------------------------------------------------------

def test_kea_csv_last_row_wins_and_release_deletes() -> None:
    text = KEA_HEADER + (
        "198.18.20.100,02:11:22:33:44:55,,3600,100,1,0,0,,0,\n"
        "198.18.20.101,02:11:22:33:44:55,00:6c:6c:2d:63:32,3600,200,1,0,0,,0,\n"
        "198.18.20.100,02:11:22:33:44:55,00:6c:6c:2d:63:31,3600,300,1,0,0,,0,\n"
        "198.18.20.101,02:11:22:33:44:55,00:6c:6c:2d:63:32,0,200,1,0,0,,0,\n"
        "198.18.20.102,02:11:22:33:44:56,,3600,400,1,0,0,,1,\n")
    leases = parse_kea_csv(text)
    assert [(str(le.address), le.client_id, le.expire_s) for le in leases] == \
        [("198.18.20.100", "00:6c:6c:2d:63:31", 300)]


def test_kea_csv_errors_name_file_and_line() -> None:
    with pytest.raises(LeaseFileError, match=r"k.csv:1: .*lacks 'state'"):
        parse_kea_csv("address,hwaddr,client_id,valid_lifetime,expire\n", "k.csv")
    with pytest.raises(LeaseFileError, match=r"k.csv:2: address '198.18.20' is not IPv4"):
        parse_kea_csv(KEA_HEADER + "198.18.20,02:11:22:33:44:55,,3600,1,1,0,0,,0,\n", "k.csv")
    with pytest.raises(LeaseFileError, match=r"k.csv:2: client_id 'zz' is not"):
        parse_kea_csv(KEA_HEADER + "198.18.20.1,02:11:22:33:44:55,zz,3600,1,1,0,0,,0,\n",
                      "k.csv")
    with pytest.raises(LeaseFileError, match=r"k.csv: empty file"):
        parse_kea_csv("", "k.csv")


def test_dnsmasq_leases() -> None:
    text = ("1795913969 02:11:22:33:44:55 198.18.20.135 * 00:6c:6c:2d:63:02\n"
            "1795913969 02:11:22:33:44:55 198.18.20.134 c1 *\n"
            "duid 00:01:00:01:2c:00:00:00:02:11:22:33:44:55\n"
            "1795913969 1 2001:db8::1 * 00:01\n")
    leases = parse_dnsmasq(text)
    assert [(str(le.address), le.client_id) for le in leases] == \
        [("198.18.20.134", None), ("198.18.20.135", "00:6c:6c:2d:63:02")]
    with pytest.raises(LeaseFileError, match=r"d.leases:1: 4 fields"):
        parse_dnsmasq("1 02:11:22:33:44:55 198.18.20.1 *\n", "d.leases")
    with pytest.raises(LeaseFileError, match=r"d.leases:1: hardware address"):
        parse_dnsmasq("1 02:11:22 198.18.20.1 * *\n", "d.leases")


def test_read_leases_missing_file_and_unknown_format(tmp_path: Path) -> None:
    assert read_leases(tmp_path / "absent", "kea") == []
    (tmp_path / "x").write_text("")
    with pytest.raises(ValueError, match="unknown lease file format 'isc'"):
        read_leases(tmp_path / "x", "isc")


def test_classify_stored_identifier() -> None:
    mac = "02:11:22:33:44:55"
    ids = {"c1": "00:6c:6c:2d:63:31"}
    assert classify_id(None, mac, ids) == "none"
    assert classify_id("01:" + mac, mac, ids) == "mac"
    assert classify_id("00:6c:6c:2d:63:31", mac, ids) == "c1"
    assert classify_id("ff:01", mac, ids) == "other:ff:01"


# ---- server configuration ------------------------------------------------------------------

def test_kea_config(tmp_path: Path) -> None:
    conf = servers.kea_config("br0", POOL, tmp_path / "l.csv", match_client_id=False)["Dhcp4"]
    assert conf["interfaces-config"]["interfaces"] == ["br0"]
    assert conf["match-client-id"] is False
    assert conf["lease-database"] == {"type": "memfile", "persist": True,
                                      "name": str(tmp_path / "l.csv"), "lfc-interval": 0}
    assert conf["subnet4"][0]["pools"] == [{"pool": "198.18.20.100 - 198.18.20.150"}]
    assert "control-socket" not in conf
    json.dumps(conf)  # serialisable as written to the config file


def test_dnsmasq_argv(tmp_path: Path) -> None:
    argv = servers.dnsmasq_argv("lan0", POOL, tmp_path / "l", tmp_path / "p", ignore_clid=True)
    for flag in ("--conf-file=/dev/null", "--port=0", "--no-ping", "--interface=lan0",
                 "--bind-interfaces", "--dhcp-ignore-clid", f"--dhcp-leasefile={tmp_path}/l",
                 "--dhcp-range=198.18.20.100,198.18.20.150,255.255.255.0,3600"):
        assert flag in argv
    assert "--dhcp-ignore-clid" not in servers.dnsmasq_argv("lan0", POOL, tmp_path / "l",
                                                            tmp_path / "p", ignore_clid=False)


def test_pool_outside_subnet_is_refused() -> None:
    with pytest.raises(ValueError, match=r"198.18.21.1 is outside the served subnet"):
        servers.Pool(POOL.subnet, POOL.first, ipaddress.IPv4Address("198.18.21.1"))
    with pytest.raises(ValueError, match="first is after last"):
        servers.Pool(POOL.subnet, POOL.last, POOL.first)


# ---- client configuration ------------------------------------------------------------------

def test_client_ids() -> None:
    assert "send dhcp-client-identifier = hardware;" in clients.dhclient_config("mac", 3)
    assert "send dhcp-client-identifier 00:6c:6c;" in clients.dhclient_config("00:6c:6c", 3)
    assert "dhcp-client-identifier" not in clients.dhclient_config("none", 3)
    with pytest.raises(clients.ClientError, match="client id '0x3d'"):
        clients.check_client_id("0x3d")


def test_client_scripts_only_add_the_address(tmp_path: Path) -> None:
    for make in (clients.udhcpc_script, clients.dhclient_script):
        body = make(tmp_path / "s.sh").read_text()
        commands = [ln.strip() for ln in body.splitlines() if "exec" in ln]
        assert len(commands) == 1 and " addr add " in commands[0], body
        assert "resolv" not in body.replace("never resolv.conf", "")
        assert (tmp_path / "s.sh").stat().st_mode & 0o111


# ---- the matrix data -----------------------------------------------------------------------

def test_matrix_loads_every_setup_server_and_client() -> None:
    cells = matrix.load_matrix(matrix.MATRIX_FILE, SCENARIOS)
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids))
    assert {c.setup.name for c in cells} == {"A", "B", "C", "D", "E"}
    assert {c.server for c in cells} == set(servers.OPTIONS)
    assert all("ipvlan" in c.id for c in cells if c.scenario.kind == "ipvlan")
    assert all("emulated" in c.id and "ipvlan" not in c.id
               for c in cells if c.scenario.kind == "bridge")


def _matrix(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "m.toml"
    p.write_text(text)
    return p


GOOD_SETUP = """
[setup.A]
description = "d"
client_ids = { c1 = "none", c2 = "none" }
scenarios = ["dhcp-macvlan"]
"""


@pytest.mark.parametrize("text, where", [
    (GOOD_SETUP.replace('"none", c2', '"0x3d", c2') + "[expect.A]\n", "setup.A.client_ids.c1"),
    (GOOD_SETUP.replace("dhcp-macvlan", "dhcp-nope") + "[expect.A]\n", "setup.A.scenarios[0]"),
    (GOOD_SETUP.replace("c2 = ", "c9 = ") + "[expect.A]\n", "setup.A.client_ids.c9"),
    (GOOD_SETUP + "[expect.A]\n", "expect.A.kea-match-client-id"),
    (GOOD_SETUP + '[expect.A]\nany-server = { lease = "shared", stored = [], why = "w" }\n',
     "expect.A.any-server.lease"),
    (GOOD_SETUP + '[expect.A]\nany-server = { lease = "same", stored = ["c3"], why = "w" }\n',
     "expect.A.any-server.stored"),
    (GOOD_SETUP + '[expect.A]\nany-server = { lease = "same", stored = [], why = "w", '
                  'udhcpc = { lease = "x" } }\n', "expect.A.any-server.udhcpc.lease"),
    (GOOD_SETUP + '[expect.A]\nany-server = { lease = "same", stored = [], why = "w" }\n'
                  'kea-bogus = { lease = "same", stored = [], why = "w" }\n',
     "expect.A.kea-bogus"),
    (GOOD_SETUP + '[expect.B]\n', "expect.B"),
    ("[setup]\n[expect]\nbad = 1\n", "expect.bad"),
    ("setup = [", ""),
])
def test_matrix_bad_input_names_the_field(tmp_path: Path, text: str, where: str) -> None:
    with pytest.raises(ScenarioError) as err:
        matrix.load_matrix(_matrix(tmp_path, text), SCENARIOS)
    assert err.value.where == where, str(err.value)
    assert str(tmp_path / "m.toml") in str(err.value)


def test_matrix_client_override(tmp_path: Path) -> None:
    text = GOOD_SETUP + ('[expect.A]\nany-server = { lease = "distinct", stored = ["none", '
                         '"none"], why = "w", dhclient = { lease = "same", stored = ["none"] } }\n')
    cells = matrix.load_matrix(_matrix(tmp_path, text), SCENARIOS)
    got = {(c.client, c.expected.lease, c.expected.why) for c in cells}
    assert got == {("udhcpc", "distinct", "w"), ("dhclient", "same", "w")}


SCENARIO_FACTS = GOOD_SETUP.replace("dhcp-macvlan", "dhcp-ipvlan-l2") + \
    '[expect.A]\nany-server = { lease = "same", stored = ["none"], why = "w" }\n'


@pytest.mark.parametrize("extra, where", [
    ('[scenario.dhcp-nope]\nwhy = "w"\n', "scenario.dhcp-nope"),
    ('[scenario.dhcp-ipvlan-l2]\nwhy = "w"\nbroadcast_flag = "yes"\n',
     "scenario.dhcp-ipvlan-l2.broadcast_flag"),
    ('[scenario.dhcp-ipvlan-l2]\nwhy = "w"\nduplicate_address = "maybe"\n',
     "scenario.dhcp-ipvlan-l2.duplicate_address"),
    ('[scenario.dhcp-ipvlan-l2]\nwhy = "w"\nno_lease = [{ client = "pump", why = "w" }]\n',
     "scenario.dhcp-ipvlan-l2.no_lease[0].client"),
    ('[scenario.dhcp-ipvlan-l2]\nwhy = "w"\nno_lease = [{ server = "isc", why = "w" }]\n',
     "scenario.dhcp-ipvlan-l2.no_lease[0].server"),
    ('[scenario.dhcp-ipvlan-l2]\nwhy = "w"\nno_lease = [{ client = "dhclient" }]\n',
     "scenario.dhcp-ipvlan-l2.no_lease[0].why"),
    ('[scenario.dhcp-ipvlan-l2]\nwhy = "w"\nno_lease = [{ why = "w" }]\n',
     "scenario.dhcp-ipvlan-l2.no_lease[0]"),
    ('[scenario.dhcp-ipvlan-l2]\nbroadcast_flag = true\n', "scenario.dhcp-ipvlan-l2.why"),
])
def test_matrix_scenario_facts_bad_input(tmp_path: Path, extra: str, where: str) -> None:
    with pytest.raises(ScenarioError) as err:
        matrix.load_matrix(_matrix(tmp_path, SCENARIO_FACTS + extra), SCENARIOS)
    assert err.value.where == where, str(err.value)


def test_matrix_scenario_facts_refine_cells(tmp_path: Path) -> None:
    extra = ('[scenario.dhcp-ipvlan-l2]\nwhy = "w"\nbroadcast_flag = true\n'
             'duplicate_address = "refused"\nno_lease = [{ client = "dhclient", why = "no -B" },'
             ' { server = "kea", why = "kea" }]\n')
    cells = matrix.load_matrix(_matrix(tmp_path, SCENARIO_FACTS + extra), SCENARIOS)
    by_client = {c.client: c for c in cells if c.server == "dnsmasq-default"}
    assert by_client["udhcpc"].broadcast_flag and by_client["udhcpc"].expected_configured == ("c1",)
    dh = by_client["dhclient"]
    assert (dh.expected.lease, dh.expected.why, dh.broadcast_flag, dh.expected_configured) == \
        ("none", "no -B", False, ())
    kea = [c for c in cells if c.server.startswith("kea-")]
    assert {(c.client, c.expected.lease, c.expected.why) for c in kea} == \
        {("udhcpc", "none", "kea"), ("dhclient", "none", "no -B")}


def _result(client: str, rc: int | None, log: str) -> clients.ClientResult:
    return clients.ClientResult(client, "ns", "eth0", rc, None, 1.0, log)


def test_client_result_reads_the_grant_and_a_clean_timeout() -> None:
    ok = _result("udhcpc", 0, "udhcpc: lease of 198.18.0.140 obtained from 198.18.0.1\n"
                              "Error: Address already assigned to an ipvlan device.")
    assert ok.leased == ipaddress.IPv4Address("198.18.0.140") and not ok.bound
    assert _result("udhcpc", 1, "udhcpc: no lease, failing").timed_out
    assert not _result("udhcpc", 1, "udhcpc: bad option").timed_out
    dh = _result("dhclient", 2, "No DHCPOFFERS received.\nUnable to obtain a lease")
    assert dh.timed_out and dh.leased is None
    assert not _result("dhclient", 1, "Unknown command: -B").timed_out
    assert _result("dhclient", None, "DHCPACK of 198.18.20.100 from 198.18.20.1").leased == \
        ipaddress.IPv4Address("198.18.20.100")
