"""CNI plugins as clients (issue 15): the scenarios agree with their native twins, bad
netconfs are refused before anything is built, and a plugin that fails (bad netconf, missing
binary, failing DEL) gives a clear error and leaves nothing behind.

The reachability cells of the cni-* scenarios run in tests/test_connectivity.py with every
other scenario (``-k cni``); the CNI dhcp cells in tests/test_dhcp.py.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest

from linklab import cni
from linklab.build import build
from linklab.capabilities import missing_link
from linklab.checks import applicable_checks
from linklab.cmd import NETNS_DIR
from linklab.model import Scenario, ScenarioError, load_all, load_scenario
from linklab.ownership import read_record

ROOT = Path(__file__).resolve().parents[1]
# the plugin scenarios only at import (this module is also imported in the VM leg's guests,
# where every scenario loaded costs ~0.1 s); every scenario on first use
CNI = [sc for sc in map(load_scenario, sorted((ROOT / "scenarios").glob("cni-*.toml")))
       if sc.kind == "cni"]


@functools.cache
def scenario(name: str) -> Scenario:
    return {sc.name: sc for sc in load_all(ROOT / "scenarios")}[name]


def test_every_plugin_scenario_is_shipped() -> None:
    """The issue's scenarios exist: macvlan in four modes, bridge, ptp, ipvlan in three."""
    want = {f"cni-macvlan-{m}" for m in ("bridge", "vepa", "private", "passthru")} | \
        {"cni-bridge", "cni-ptp"} | {f"cni-ipvlan-{m}" for m in ("l2", "l3", "l3s")}
    assert want <= {sc.name for sc in CNI}


@pytest.mark.parametrize("sc", [s for s in CNI if s.cni.get("native")], ids=lambda s: s.name)
def test_native_and_cni_expectations_agree(sc) -> None:
    """Where a CNI scenario matches a native one, every shared check expects the same result,
    except the checks it lists in ``differs`` (the plugin does something else: the reason is
    in its expectation), and those must really differ."""
    native = scenario(sc.cni["native"])
    differs = set(sc.cni.get("differs", []))
    shared = set(applicable_checks(sc)) & set(applicable_checks(native))
    assert shared, f"{sc.name} shares no check with {native.name}"
    assert differs <= shared, f"{sc.name}: differs lists checks it does not share"
    disagree = {c for c in shared
                if dict(sc.expect[c].results) != dict(native.expect[c].results)}
    assert disagree == differs, (
        f"{sc.name} vs {native.name}: expectations differ on {sorted(disagree)}, the "
        f"scenario declares {sorted(differs)}: " + "; ".join(
            f"{c}: cni {dict(sc.expect[c].results)} native {dict(native.expect[c].results)}"
            for c in sorted(disagree ^ differs)))
    # a difference carries its own reason, naming the plugin
    for c in differs:
        assert "plugin" in sc.expect[c].why, f"{sc.name}: {c}: say what the plugin does"
    # same topology shape: same family coverage per shared check
    for c in shared:
        assert applicable_checks(sc)[c] == applicable_checks(native)[c], c


# ---- validation: bad netconfs are refused before anything is built -------------------------

BASE = (ROOT / "scenarios" / "cni-macvlan-bridge.toml").read_text()


def _variant(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    assert old in BASE, old
    path = tmp_path / "bad.toml"
    path.write_text(BASE.replace(old, new, count))
    return path


@pytest.mark.parametrize("old, new, where, words", [
    ('type = "macvlan"', 'type = "ipvlan"', "cni.netconf.type", "macvlan"),
    ('mode = "bridge"\n\n[cni.netconf.ipam]', 'mode = "vepa"\n\n[cni.netconf.ipam]',
     "cni.netconf.mode", "'bridge'"),
    ('master = "eth0"', 'master = "eth9"', "cni.netconf.master", "eth0"),
    ('name = "ll-macvlan-bridge"', 'cniVersion = "1.1.0"\nname = "ll-macvlan-bridge"',
     "cni.netconf.cniVersion", "1.0.0"),
    ('type = "host-local"', 'type = "host-local"\ndataDir = "/var/lib/cni/networks"',
     "cni.netconf.ipam.dataDir", "run-owned"),
    ('type = "host-local"', 'type = "whereabouts"', "cni.netconf.ipam.type", "host-local"),
    ('native = "macvlan-bridge"', 'native = "macvlan-bridge"\nplugin = "x"', "cni.plugin",
     "unknown field"),
    ('addrs = ["198.18.0.12/24", "2001:db8:0:1::12/64"]',
     ('addrs = ["198.18.0.12/24", "2001:db8:0:1::12/64"]\nroutes = [{ to = "default", via = '
      '"198.18.0.1" }]'), "container[1].routes", "IPAM"),
    ('kind = "cni"\nmode = "macvlan-bridge"', 'kind = "macvlan"\nmode = "bridge"', "cni",
     "only kind 'cni'"),
    ('mode = "macvlan-bridge"', 'mode = "macvlan-bridged"', "mode", "macvlan-bridge"),
    ('rangeEnd = "198.18.0.19"', 'rangeEnd = "10.0.0.19"', "cni.netconf.ipam.ranges[0][0].rangeEnd",
     "outside the suite's ranges"),
])
def test_bad_netconf_named(tmp_path: Path, old: str, new: str, where: str, words: str) -> None:
    path = _variant(tmp_path, old, new)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert err.value.where == where, str(err.value)
    assert str(path) in str(err.value) and words in str(err.value), str(err.value)


def test_missing_cni_table(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(re.sub(r"\n\[cni\].*?(?=\n\[expect\])", "\n", BASE, flags=re.DOTALL))
    with pytest.raises(ScenarioError, match=r"bad.toml: cni: missing: kind 'cni' needs a \[cni\]"):
        load_scenario(path)


def test_plugin_lookup_names_cni_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(cni, "CNI_PATH", str(tmp_path))
    with pytest.raises(cni.CniError) as err:
        cni.plugin_path("macvlan", "sc", "ADD")
    assert f"no executable 'macvlan' in CNI_PATH {tmp_path}" in str(err.value)
    assert "containernetworking-plugins" in str(err.value)
    with pytest.raises(cni.CniError, match="not a plugin name"):
        cni.plugin_path("../bin/sh")


def test_versions() -> None:
    assert cni.version_ok("1.0.0") and cni.version_ok("0.4.0") and cni.version_ok("0.3.1")
    assert not cni.version_ok("1.1.0") and not cni.version_ok("1.0") and \
        not cni.version_ok(1)


def test_plugin_error_object_parsed() -> None:
    err = cni._plugin_error("macvlan", "sc", "ADD", 1,
                            '{"code": 7, "msg": "invalid MTU", "details": "max 1400"}', "")
    assert (err.code, err.msg, err.details) == (7, "invalid MTU", "max 1400")
    assert str(err) == "sc: CNI plugin 'macvlan' ADD failed (code 7): invalid MTU (max 1400)"
    raw = cni._plugin_error("macvlan", "sc", "DEL", 2, "", "panic: boom")
    assert raw.code is None and "status 2" in raw.msg and "panic: boom" in raw.msg


# ---- live: a failing plugin leaves nothing -------------------------------------------------

def _skip_unless_macvlan() -> None:
    if why := missing_link("cni", "macvlan-bridge", None):
        pytest.skip(why)


def _left(run, scenario) -> list[str]:
    """What the run's record still holds for ``scenario``'s containers, and any of their
    namespaces still mounted."""
    names = {run.ns_name(c.name) for c in scenario.containers}
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
def test_host_local_state_in_run_dir(tmp_path: Path, run) -> None:
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
def test_passthru_second_container_refused(run) -> None:
    """macvlan passthru through the plugin: a second container's ADD fails with the kernel's
    EINVAL passed on in the plugin's message (natively: second-child = EINVAL)."""
    from linklab.kinds import cni as cni_kind
    from linklab.netns import NetNS

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
    text = (ROOT / "scenarios" / "cni-ipvlan-l2.toml").read_text()
    text = text.replace('name = "c1"', 'name = "cf1"').replace('name = "c2"', 'name = "cf2"')
    path = tmp_path / "cni-ipvlan-failing.toml"
    path.write_text(text.replace('name = "cni-ipvlan-l2"', 'name = "cni-ipvlan-failing"'))
    sc = load_scenario(path)
    only = tmp_path / "cni-bin"
    only.mkdir()
    (only / "ipvlan").symlink_to(cni.plugin_path("ipvlan"))
    monkeypatch.setattr(cni, "CNI_PATH", str(only))
    from linklab.kinds import cni as cni_kind

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
