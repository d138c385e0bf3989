"""Declare: every shipped scenario loads, and malformed ones give one clear error naming the
file and the field — before anything is built."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from linklab.checks import applicable_checks, cells
from linklab.kinds import REGISTRY
from linklab.model import ALLOWED, SHIPPED, ScenarioError, load_all, load_scenario

BASE = (SHIPPED / "macvlan-bridge.toml").read_text()


def test_every_shipped_scenario_loads_with_a_complete_expectation_table() -> None:
    scenarios = load_all(SHIPPED)
    assert {s.kind for s in scenarios} == set(REGISTRY)   # every registered kind ships one
    names = {s.name for s in scenarios}
    assert {"seed-ipvlan-l2", "seed-ipvlan-l3", "macvlan-vepa-hairpin"} <= names
    for s in scenarios:
        for c in cells(s):
            assert c.expected and c.why, c.id
        assert set(s.expect) == set(applicable_checks(s))


def test_every_address_is_in_the_suite_ranges() -> None:
    for s in load_all(SHIPPED):
        nodes = [s.host, s.upstream, s.remote, *s.containers] + ([s.bridge] if s.bridge else [])
        addrs = [a.ip for n in nodes for a in n.addrs] + [a.ip for a in s.remote_gateway]
        addrs += [a.ip for n in s.containers if n.peer for a in n.peer.addrs]
        for a in addrs:
            assert any(a in net for net in ALLOWED), (s.name, a)


def test_cell_ids_read_like_the_matrix() -> None:
    ids = {c.id for s in load_all(SHIPPED) for c in cells(s)}
    assert "macvlan-private-v4-child-to-child" in ids
    assert "ipvlan-l3s-bridge-v6-child-to-gateway" in ids
    assert "macvlan-passthru-second-child" in ids
    assert "bridge-l2-multicast" in ids


def mutate(old: str, new: str, text: str = BASE) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# (case id, file text, field the error must name, words the message must contain)
BAD = [
    ("toml-syntax", BASE.replace('kind = "macvlan"', 'kind = "macvlan'), "", "not valid TOML"),
    ("unknown-kind", mutate('kind = "macvlan"', 'kind = "macvtap"'), "kind", "unknown kind"),
    ("unknown-mode", mutate('mode = "bridge"', 'mode = "bridged"'), "mode", "unknown macvlan mode"),
    ("unknown-flag", mutate('mode = "bridge"', 'mode = "bridge"\nflag = "vepa"'), "flag",
     "takes no flag"),
    ("missing-mode", mutate('mode = "bridge"\n', ''), "mode", "needs a mode"),
    ("address-outside", mutate('"198.18.0.11/24"', '"10.0.0.11/24"'), "container[0].addrs[0]",
     "outside the suite's ranges"),
    ("v6-outside", mutate('"2001:db8:0:1::12/64"', '"fd00::12/64"'), "container[1].addrs[1]",
     "outside"),
    ("route-via-outside", mutate('via = "198.18.100.1"', 'via = "192.168.1.1"'),
     "remote.routes[0].via", "outside"),
    ("no-prefix", mutate('"198.18.0.11/24"', '"198.18.0.11"'), "container[0].addrs[0]",
     "ADDR/PREFIX"),
    ("duplicate-name", mutate('name = "c2"', 'name = "c1"'), "container[1].name", "duplicate"),
    ("name-clash-role", mutate('name = "c2"', 'name = "host"'), "container[1].name", "duplicate"),
    ("duplicate-address", mutate('"198.18.0.12/24"', '"198.18.0.11/24"'), "container[1].addrs",
     "also used by container[0]"),
    ("ifname-too-long", mutate('name = "c1"\nifname = "eth0"', 'name = "c1"\nifname = "'
                               'averyverylongname0"'), "container[0].ifname", "at most 15"),
    ("ifname-slash", mutate('name = "c1"\nifname = "eth0"', 'name = "c1"\nifname = "eth/0"'),
     "container[0].ifname", "character"),
    ("missing-field", mutate('[upstream]\nifname = "lan0"\n', '[upstream]\n'), "upstream.ifname",
     "missing required field"),
    ("missing-remote", re.sub(r"\[remote\].*?\n\n", "", BASE, flags=re.S), "remote",
     "missing required field"),
    ("wrong-type-mtu", mutate("mtu = 1400", 'mtu = "1400"'), "mtu", "must be int"),
    ("wrong-type-hairpin", mutate("hairpin = false", "hairpin = 1"), "upstream.hairpin",
     "must be bool"),
    ("wrong-type-addrs", mutate('addrs = ["198.18.0.11/24", "2001:db8:0:1::11/64"]',
                                'addrs = "198.18.0.11/24"'), "container[0].addrs", "must be list"),
    ("mtu-range", mutate("mtu = 1400", "mtu = 500"), "mtu", "out of range"),
    ("unknown-field", mutate("mtu = 1400", "mtu = 1400\nmtuu = 3"), "mtuu", "unknown field"),
    ("one-container", BASE[:BASE.index('[[container]]\nname = "c2"')] +
     BASE[BASE.index("[expect]"):], "container", "at least 2"),
    ("passthru-two-children", mutate('mode = "bridge"', 'mode = "passthru"'), "container",
     "exactly one child"),
    ("veth-peer-on-macvlan", mutate('name = "c1"\n', 'name = "c1"\npeer = { ifname = "x" }\n'),
     "container[0].peer", "no host-side peer"),
    ("expect-missing-cell", re.sub(r"^neigh = .*\n", "", BASE, flags=re.M), "expect.neigh",
     "every cell needs"),
    ("expect-unknown-check", mutate("[expect]\n", '[expect]\nteleport = { result = "pass", '
                                    'why = "x" }\n'), "expect.teleport", "no such check"),
    ("expect-bad-result", mutate('neigh = { result = "pass"', 'neigh = { result = "maybe"'),
     "expect.neigh.v4", "must be 'pass', 'blocked'"),
    ("expect-no-reason", mutate('neigh = { result = "pass", why = "bridge mode: ARP/ND between '
                                'children is switched locally" }', 'neigh = { result = "pass" }'),
     "expect.neigh.why", "missing required field"),
    ("default-route-no-via", mutate('{ to = "default", via = "198.18.100.1" }',
                                    '{ to = "default", dev = "eth0" }'), "remote.routes[0].via",
     "needs 'via'"),
]


@pytest.mark.parametrize("text, field, words", [pytest.param(t, f, w, id=i) for i, t, f, w in BAD])
@pytest.mark.usefixtures("no_namespaces")
def test_malformed_scenario_gives_one_clear_error(tmp_path: Path, text: str, field: str,
                                                   words: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert err.value.where == field, message
    assert words in message, message


def test_duplicate_scenario_names_across_files(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(BASE)
    (tmp_path / "b.toml").write_text(BASE)
    with pytest.raises(ScenarioError, match=r"b\.toml: name: 'macvlan-bridge' is also the name"):
        load_all(tmp_path)


def test_unreadable_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="missing.toml: cannot read"):
        load_scenario(tmp_path / "missing.toml")


@pytest.mark.parametrize("text, field, words", [pytest.param(t, f, w, id=i) for i, t, f, w in BAD])
@pytest.mark.usefixtures("no_namespaces")
def test_bad_scenario_in_a_scenario_dir(tmp_path: Path, text: str, field: str,
                                        words: str) -> None:
    """The same corpus loaded as the suite loads a directory (``load_all``, what --scenarios
    and the connectivity matrix use): one ScenarioError naming the file and the field, before
    any namespace exists. Part of the drill's bad-input corpus (drill/faults.py)."""
    (tmp_path / "good.toml").write_text((SHIPPED / "veth.toml").read_text())
    (tmp_path / "zz-bad.toml").write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_all(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'zz-bad.toml'}: {field}"), str(err.value)
    assert words in str(err.value)
