"""CNI plugins as clients, live (issue 15): a plugin that fails (bad netconf, missing binary,
failing DEL, a second passthru container, a missing IPAM plugin) gives a clear error and
leaves nothing behind. The scenarios and their validation are in tests/unit.

The reachability cells of the cni-* scenarios run in tests/live/test_connectivity.py with
every other scenario (``-k cni``); the CNI dhcp cells in tests/live/test_dhcp.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from linklab import cni
from linklab.build import build
from linklab.capabilities import missing_link
from linklab.cmd import NETNS_DIR
from linklab.kinds import cni as cni_kind
from linklab.model import SHIPPED, load_scenario
from linklab.netns import NetNS
from linklab.ownership import read_record

BASE = (SHIPPED / "cni-macvlan-bridge.toml").read_text()


def _skip_unless_macvlan() -> None:
    if why := missing_link("cni", "macvlan-bridge", None):
        pytest.skip(why)


def _left(run, sc) -> list[str]:
    """What the run's record still holds for ``sc``'s containers, and any of their
    namespaces still mounted."""
    names = {run.ns_name(c.name) for c in sc.containers}
    left = read_record(run.record)
    out = [n for n in left.namespaces if n in names]
    out += [p for p in left.paths if "-cni-ipam-" in p]
    out += [n for n in names if os.path.exists(f"{NETNS_DIR}/{n}")]
    return out


def _failing(tmp_path: Path, old: str, new: str):
    """cni-macvlan-bridge with its own container names (cf1, cf2) and one change."""
    text = BASE.replace('name = "c1"', 'name = "cf1"').replace('name = "c2"', 'name = "cf2"')
    assert old in text, old
    path = tmp_path / "cni-failing.toml"
    path.write_text(text.replace(old, new, 1).replace('name = "cni-macvlan-bridge"',
                                                      'name = "cni-failing"'))
    return load_scenario(path)


@pytest.mark.connectivity
def test_plugin_refuses_netconf(tmp_path: Path, run) -> None:
    """The plugin's own JSON error (an MTU above the parent's) names plugin, scenario,
    command and message; the build is rolled back (namespaces, IPAM dir)."""
    _skip_unless_macvlan()
    sc = _failing(tmp_path, 'mode = "bridge"\n', 'mode = "bridge"\nmtu = 9000\n')
    with pytest.raises(cni.CniError) as err, build(sc, run):
        pass
    e = err.value
    assert (e.plugin, e.scenario, e.command) == ("macvlan", "cni-failing", "ADD"), str(e)
    assert e.code is not None and "MTU" in e.msg and "9000" in e.msg, str(e)
    assert str(e).startswith("cni-failing: CNI plugin 'macvlan' ADD failed (code"), str(e)
    assert _left(run, sc) == []


@pytest.mark.connectivity
def test_missing_plugin_binary(tmp_path: Path, run, monkeypatch) -> None:
    """The IPAM plugin missing from CNI_PATH: macvlan's own error says so, through linklab's;
    the main plugin missing: linklab's error names CNI_PATH. Nothing is left either way."""
    _skip_unless_macvlan()
    sc = _failing(tmp_path, "x", "x")
    only = tmp_path / "cni-bin"
    only.mkdir()
    (only / "macvlan").symlink_to(cni.plugin_path("macvlan"))
    monkeypatch.setattr(cni, "CNI_PATH", str(only))
    with pytest.raises(cni.CniError) as err, build(sc, run):
        pass
    assert err.value.plugin == "macvlan" and "host-local" in err.value.msg, str(err.value)
    assert _left(run, sc) == []
    monkeypatch.setattr(cni, "CNI_PATH", str(tmp_path / "empty"))
    with pytest.raises(cni.CniError, match=r"cni-failing: CNI plugin 'macvlan' ADD: no "
                                           r"executable 'macvlan' in CNI_PATH"), build(sc, run):
        pass
    assert _left(run, sc) == []


@pytest.mark.connectivity
def test_failing_del_still_cleans(tmp_path: Path, run, monkeypatch) -> None:
    """DEL failing at teardown fails the test with the plugin's error, and the namespaces
    (holding the links) and the IPAM directory go all the same."""
    _skip_unless_macvlan()
    sc = _failing(tmp_path, "x", "x")
    with pytest.raises(cni.CniError) as err, build(sc, run) as topo:
        assert sorted(topo.ns("cf1").ipr.link_lookup(ifname="eth0")) != []
        assert any("-cni-ipam-" in p for p in read_record(run.record).paths)
        monkeypatch.setattr(cni, "CNI_PATH", str(tmp_path / "gone"))
    assert err.value.command == "DEL", str(err.value)
    assert _left(run, sc) == []


@pytest.mark.connectivity
def test_host_local_state_in_run_dir(tmp_path: Path, run, scenario) -> None:
    """host-local records its allocations in the run's directory (never /var/lib/cni), the
    static-free scenario gets the declared addresses in order, and CHECK passed."""
    _skip_unless_macvlan()
    sc = scenario("cni-macvlan-bridge")
    before = set(os.listdir("/var/lib/cni/networks")) if os.path.isdir(
        "/var/lib/cni/networks") else set()
    with build(sc, run) as topo:
        data = topo.kind_state[("cni-ipam", "host")]
        assert data.startswith("/tmp/linklab-" + run.marker)
        held = sorted(os.listdir(Path(data) / "ll-macvlan-bridge"))
        assert {"198.18.0.11", "198.18.0.12", "2001:db8:0:1::11", "2001:db8:0:1::12"} <= \
            set(held), held
    assert not os.path.exists(data)
    after = set(os.listdir("/var/lib/cni/networks")) if os.path.isdir(
        "/var/lib/cni/networks") else set()
    assert after == before


@pytest.mark.connectivity
def test_passthru_second_container_refused(run, scenario) -> None:
    """macvlan passthru through the plugin: a second container's ADD fails with the kernel's
    EINVAL passed on in the plugin's message (natively: second-child = EINVAL)."""
    if why := missing_link("cni", "macvlan-passthru", None):
        pytest.skip(why)
    sc = scenario("cni-macvlan-passthru")
    with build(sc, run) as topo:
        name = run.ns_name("cx")
        run.own_namespace(name)
        extra = NetNS(name)
        try:
            at = cni.Attachment(sc.name, "linklab-second", extra.path, "eth0", topo.ns("host"))
            netconf = cni_kind.netconf(topo, sc.containers[0], sc.hosts[0])
            with pytest.raises(cni.CniError) as err, cni.attached(netconf, at):
                pass
            assert extra.ipr.link_lookup(ifname="eth0") == []
        finally:
            extra.close()
            run.disown_namespace(name)
    e = err.value
    assert (e.plugin, e.command) == ("macvlan", "ADD") and "invalid argument" in e.msg, str(e)


@pytest.mark.connectivity
def test_ipvlan_ipam_failure_leaves_nothing(tmp_path: Path, run, monkeypatch) -> None:
    """ipvlan's ADD with an IPAM plugin that cannot run: the plugin's error names the IPAM
    plugin; ipvlan 1.1.1 leaves its link in the container after the failed ADD (the known
    upstream leak) and its DEL fails too (it needs the IPAM plugin), yet the build's rollback
    removes everything: the namespace owns the link."""
    if why := missing_link("cni", "ipvlan-l2", None):
        pytest.skip(why)
    text = (SHIPPED / "cni-ipvlan-l2.toml").read_text()
    text = text.replace('name = "c1"', 'name = "cf1"').replace('name = "c2"', 'name = "cf2"')
    path = tmp_path / "cni-ipvlan-failing.toml"
    path.write_text(text.replace('name = "cni-ipvlan-l2"', 'name = "cni-ipvlan-failing"'))
    sc = load_scenario(path)
    only = tmp_path / "cni-bin"
    only.mkdir()
    (only / "ipvlan").symlink_to(cni.plugin_path("ipvlan"))
    monkeypatch.setattr(cni, "CNI_PATH", str(only))
    seen: list[bool] = []
    real_plug = cni_kind.plug

    def plug(topo, c, host, **kw):
        def look() -> None:
            seen.append(bool(topo.ns(c.name).ipr.link_lookup(ifname=c.ifname)))
        return real_plug(topo, c, host, failed_add=look, **kw)
    monkeypatch.setattr(cni_kind, "plug", plug)
    with pytest.raises(cni.CniError) as err, build(sc, run):
        pass
    assert err.value.plugin == "ipvlan" and "host-local" in err.value.msg, str(err.value)
    assert seen == [True], f"after the failed ADD the ipvlan link was there: {seen}"
    assert _left(run, sc) == []
