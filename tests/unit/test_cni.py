"""CNI plugins as clients (issue 15), without a kernel: the scenarios agree with their native
twins, bad netconfs are refused before anything is built, the plugin is looked up in CNI_PATH
and its error object is read. A plugin failing for real, live, is in tests/live/test_cni.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from linklab import cni
from linklab.checks import applicable_checks
from linklab.model import SHIPPED, ScenarioError, load_scenario

CNI = [sc for sc in map(load_scenario, sorted(SHIPPED.glob("cni-*.toml"))) if sc.kind == "cni"]


def test_every_plugin_scenario_is_shipped() -> None:
    """The issue's scenarios exist: macvlan in four modes, bridge, ptp, ipvlan in three."""
    want = {f"cni-macvlan-{m}" for m in ("bridge", "vepa", "private", "passthru")} | \
        {"cni-bridge", "cni-ptp"} | {f"cni-ipvlan-{m}" for m in ("l2", "l3", "l3s")}
    assert want <= {sc.name for sc in CNI}


@pytest.mark.parametrize("sc", [s for s in CNI if s.cni.get("native")], ids=lambda s: s.name)
def test_native_and_cni_expectations_agree(sc, scenario) -> None:
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

BASE = (SHIPPED / "cni-macvlan-bridge.toml").read_text()


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


def fake_plugin(where: Path, monkeypatch: pytest.MonkeyPatch, stdout: str, stderr: str,
                status: int) -> None:
    """CNI_PATH ``where`` holding only a "macvlan" that prints ``stdout`` and ``stderr``
    and exits ``status``."""
    where.mkdir()
    plugin = where / "macvlan"
    plugin.write_text(f"#!/bin/sh\nprintf %s {shlex.quote(stdout)}\n"
                      f"printf %s {shlex.quote(stderr)} >&2\nexit {status}\n")
    plugin.chmod(0o755)
    monkeypatch.setattr(cni, "CNI_PATH", str(where))


def test_plugin_error_object_parsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's JSON error object (code, msg, details) becomes the CniError; without one,
    its exit status and stderr do."""
    at = cni.Attachment("sc", "id", "/nonexistent", "eth0", None)  # type: ignore[arg-type]
    fake_plugin(tmp_path / "json", monkeypatch,
                '{"code": 7, "msg": "invalid MTU", "details": "max 1400"}', "", 1)
    with pytest.raises(cni.CniError) as err:
        cni.invoke("ADD", {"type": "macvlan"}, at)
    e = err.value
    assert (e.code, e.msg, e.details) == (7, "invalid MTU", "max 1400")
    assert str(e) == "sc: CNI plugin 'macvlan' ADD failed (code 7): invalid MTU (max 1400)"
    fake_plugin(tmp_path / "raw", monkeypatch, "", "panic: boom", 2)
    with pytest.raises(cni.CniError) as err:
        cni.invoke("DEL", {"type": "macvlan"}, at)
    raw = err.value
    assert (raw.plugin, raw.command, raw.code) == ("macvlan", "DEL", None), str(raw)
    assert "status 2" in raw.msg and "panic: boom" in raw.msg, str(raw)
