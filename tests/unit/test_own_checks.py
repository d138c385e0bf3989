"""The scenario's own checks, without root: [[check]] and [pairs] parse into flows, a bad one
is one error naming the file and the field, cells read like the matrix, truth tables expand
every pair with its expectation (rule, group or a [[check]] of the pair), the size bound."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from linklab.checks import TABLE, cells
from linklab.cli import record
from linklab.format import MAX_CONTAINERS
from linklab.model import SHIPPED, Scenario, ScenarioError, load_text, with_all_pairs
from tests import REPO

BASE = (SHIPPED / "bridge.toml").read_text()     # c1, c2 on a bridge, v4 and v6

CHECKS = '''
[[check]]
from = "c2"
to = "c1:80"
proto = "tcp"
expect = "blocked"
why = "tenant b may not reach a's web server"

[[check]]
from = "c1"
to = "remote:53"
proto = "udp"
family = "v4"
expect = "pass"
why = "DNS to the WAN"

[[check]]
from = "c1"
to = "upstream"
expect = "pass"
why = "the router answers echo"
'''


def scenario(extra: str, name: str = "x.toml", containers: int = 0) -> Scenario:
    """BASE with ``extra`` before its [expect] table (and ``containers`` more containers)."""
    top, _, extra = extra.rpartition("#top\n")     # top-level keys go before every table
    text = top + BASE.replace("[expect]", extra + "\n[expect]", 1)
    more = "".join(f'''
[[container]]
name = "c{i}"
ifname = "eth0"
addrs = ["198.18.21.{i}/24"]
peer = {{ ifname = "ve-c{i}" }}
routes = [{{ to = "default", via = "198.18.20.1" }}]
''' for i in range(3, 3 + containers))
    if more:
        text = text.replace("[expect]", more + "\n[expect]", 1) \
            .replace('"198.18.20.1/24"', '"198.18.20.1/24", "198.18.21.1/24"', 1)
    return load_text(text, name)


def test_checks_parse_into_flows_with_readable_cell_ids() -> None:
    sc = scenario(CHECKS)
    own = [c for c in cells(sc) if c.flows]
    assert [c.id for c in own] == ["bridge-v4-c2-to-c1-tcp-80", "bridge-v6-c2-to-c1-tcp-80",
                                   "bridge-v4-c1-to-remote-udp-53", "bridge-v4-c1-to-upstream-icmp",
                                   "bridge-v6-c1-to-upstream-icmp"]
    first = own[0].flows[0]
    assert (first.flow.src, first.flow.dst, first.flow.proto, first.flow.port) == \
        ("c2", "c1", "tcp", 80)
    assert own[0].expected == "blocked" and own[0].why.startswith("tenant b")
    assert own[2].flows[0].family == "v4"


BAD = [
    ("unknown-node", CHECKS.replace('to = "c1:80"', 'to = "c9:80"'), "check[0].to",
     "no node 'c9'"),
    ("unknown-source",
     CHECKS.replace('from = "c1"\nto = "upstream"', 'from = "c7"\nto = "upstream"'),
     "check[2].from", "no node 'c7'"),
    ("tcp-without-port", CHECKS.replace('to = "c1:80"', 'to = "c1"'), "check[0].to",
     "tcp needs a port"),
    ("icmp-with-port", CHECKS.replace('to = "upstream"', 'to = "upstream:7"'), "check[2].to",
     "icmp takes no port"),
    ("bad-port", CHECKS.replace('"c1:80"', '"c1:http"'), "check[0].to", "not a number"),
    ("port-range", CHECKS.replace('"c1:80"', '"c1:70000"'), "check[0].to", "out of range"),
    ("bad-proto", CHECKS.replace('proto = "tcp"', 'proto = "sctp"'), "check[0].proto",
     "must be icmp | tcp | udp"),
    ("bad-expect", CHECKS.replace('expect = "blocked"', 'expect = "drop"'), "check[0].expect",
     "must be 'pass' or 'blocked'"),
    ("missing-why", CHECKS.replace('why = "DNS to the WAN"\n', ''), "check[1].why",
     "missing required field"),
    ("unknown-field", CHECKS.replace('family = "v4"', 'family = "v4"\nport = 53'),
     "check[1].port", "unknown field"),
    ("bad-family", CHECKS.replace('family = "v4"', 'family = "v5"'), "check[1].family",
     "must be 'v4' or 'v6'"),
    ("self", CHECKS.replace('to = "upstream"', 'to = "c1"'), "check[2].to", "own source"),
    ("duplicate", CHECKS + CHECKS.split("[[check]]")[3].join(["[[check]]", ""]), "check[3]",
     "also declared by check[2]"),
    ("pairs-bad-probe", '[pairs]\nprobes = ["tcp"]', "pairs.probes[0]", "tcp needs a port"),
    ("pairs-bad-rule", '[pairs]\ncontainers = "maybe"\nwhy = "x"', "pairs.containers",
     "pass | blocked | same-group"),
    ("pairs-rule-no-why", '[pairs]\nhost = "pass"', "pairs.why", "needs a reason"),
    ("pairs-bad-shape", 'pairs = "some"\n#top\n', "pairs", 'must be "all" or a table'),
    ("group-unknown", ('[group]\na = ["c1", "c8"]\n[pairs]\ncontainers = "same-group"\n'
                       'why = "tenants"'), "group.a[1]", "no container 'c8'"),
    ("group-twice", '[group]\na = ["c1"]\nb = ["c1", "c2"]\n[pairs]\nwhy = "x"', "group.b[0]",
     "also in group 'a'"),
    ("group-lone", '[group]\na = ["c1"]\n[pairs]\ncontainers = "same-group"\nwhy = "x"',
     "group", "'c2' is in no group"),
    ("same-group-no-groups", '[pairs]\ncontainers = "same-group"\nwhy = "x"',
     "pairs.containers", "needs a [group] table"),
    ("group-without-pairs", '[group]\na = ["c1", "c2"]', "group", "give a [pairs] table"),
]


@pytest.mark.parametrize("extra, field, words", [pytest.param(e, f, w, id=i)
                                                  for i, e, f, w in BAD])
@pytest.mark.usefixtures("no_namespaces")
def test_a_bad_own_check_is_one_error_naming_file_and_field(extra: str, field: str,
                                                             words: str) -> None:
    with pytest.raises(ScenarioError) as err:
        scenario(extra)
    assert err.value.where == field, str(err.value)
    assert str(err.value).startswith(f"x.toml: {field}: "), str(err.value)
    assert words in str(err.value), str(err.value)


def test_the_error_reads_as_documented() -> None:
    extra = CHECKS + '\n[[check]]\nfrom = "c1"\nto = "c9"\nexpect = "pass"\nwhy = "w"\n'
    with pytest.raises(ScenarioError, match=r"^x\.toml: check\[3\]\.to: no node 'c9' "):
        scenario(extra)


def test_pairs_all_takes_its_rules_from_expect_and_a_check_overrides_one_pair() -> None:
    sc = scenario('pairs = "all"\n#top\n' + CHECKS)
    tables = [c for c in cells(sc) if c.table]
    assert [c.id for c in tables] == ["bridge-v4-pairs-icmp", "bridge-v6-pairs-icmp"]
    assert all(c.expected == TABLE for c in tables)
    v4 = {fc.flow.name: fc for fc in tables[0].flows}
    # c1, c2: each to the other container, its host, the gateway and the remote
    assert list(v4) == ["c1-to-c2-icmp", "c1-to-host-icmp", "c1-to-upstream-icmp",
                        "c1-to-remote-icmp", "c2-to-c1-icmp", "c2-to-host-icmp",
                        "c2-to-upstream-icmp", "c2-to-remote-icmp"]
    assert v4["c1-to-c2-icmp"].expected == "pass"          # [expect] child-to-child
    assert v4["c1-to-c2-icmp"].why.startswith("as child-to-child: ")
    assert v4["c1-to-upstream-icmp"].why == "the router answers echo"   # the [[check]]
    assert {fc.origin for fc in v4.values()} == {"pairs"}


def test_pairs_by_group_make_a_truth_table_per_probe_and_family() -> None:
    sc = scenario('''
[group]
a = ["c1", "c3"]
b = ["c2", "c4"]

[pairs]
probes = ["icmp", "tcp:80", "udp:53"]
families = ["v4"]
containers = "same-group"
host = "blocked"
why = "tenants are isolated on the bridge"
''', containers=2)
    tables = {c.check: c for c in cells(sc) if c.table}
    assert list(tables) == ["pairs-icmp", "pairs-tcp-80", "pairs-udp-53"]
    flows = {fc.flow.name: fc for fc in tables["pairs-tcp-80"].flows}
    assert len(flows) == 4 * 3 + 4 * 3     # 4 containers x (3 others + host, gateway, remote)
    assert flows["c1-to-c3-tcp-80"].expected == "pass"
    assert flows["c1-to-c2-tcp-80"].expected == "blocked"
    assert flows["c1-to-c2-tcp-80"].why == "tenants are isolated on the bridge (other group)"
    assert flows["c3-to-host-tcp-80"].expected == "blocked"
    assert flows["c3-to-remote-tcp-80"].expected == "pass"   # [expect] child-to-remote
    assert "12 expected to pass" in tables["pairs-tcp-80"].why


def test_all_pairs_option_adds_pairs_from_expect() -> None:
    sc = scenario("")
    assert sc.pairs is None
    more = with_all_pairs(sc)
    assert [c.id for c in cells(more) if c.table] == ["bridge-v4-pairs-icmp",
                                                      "bridge-v6-pairs-icmp"]
    assert with_all_pairs(more) is more


def test_record_mode_leaves_missing_expectations_unset() -> None:
    text = BASE.replace("[expect]", '[[check]]\nfrom = "c1"\nto = "c2:22"\nproto = "tcp"\n\n'
                        '[pairs]\nprobes = ["udp:53"]\n\n[expect]')
    sc = load_text(text, "x.toml", require_expect=False)
    assert {c.expected for c in cells(sc) if c.flows and not c.table} == {"unset"}
    with pytest.raises(ScenarioError, match=r"check\[0\]\.expect: missing"):
        load_text(text, "x.toml")


def test_more_containers_than_the_bound_are_refused_naming_file_and_limit(
        tmp_path: Path) -> None:
    n = MAX_CONTAINERS + 1
    text = BASE[:BASE.index("[[container]]")] + "".join(
        f'[[container]]\nname = "c{i}"\nifname = "eth0"\npeer = {{ ifname = "v{i}" }}\n'
        for i in range(n))
    with pytest.raises(ScenarioError) as err:
        load_text(text, tmp_path / "big.toml", require_expect=False)
    assert str(err.value) == (f"{tmp_path / 'big.toml'}: container: {n} containers: linklab "
                              f"accepts at most {MAX_CONTAINERS} per scenario (MAX_CONTAINERS)")


def test_the_scale_scenarios_are_valid_and_the_bound_names_its_limit() -> None:
    spec = importlib.util.spec_from_file_location("linklab_bench_scale",
                                                  REPO / "bench" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    sc = load_text(scale.scale_scenario(250, ["icmp", "udp:53"]), "scale.toml")
    tables = [c for c in cells(sc) if c.table]
    assert [c.id for c in tables] == ["scale-250-v4-pairs-icmp", "scale-250-v4-pairs-udp-53"]
    assert all(len(c.flows) == 250 * 252 for c in tables)
    assert {fc.expected for c in tables for fc in c.flows} == {"pass"}
    with pytest.raises(ScenarioError, match=r"^big\.toml: container: 1025 containers: linklab "
                                            r"accepts at most 1024"):
        load_text(scale.scale_scenario(MAX_CONTAINERS + 1, ["icmp"]), "big.toml")


def test_a_hosts_nftables_ruleset_is_a_string_of_the_file() -> None:
    example = REPO / "examples" / "own-tests" / "scenarios" / "three-tenants.toml"
    sc = load_text(example.read_text(), "three-tenants.toml")
    assert "table bridge tenants" in sc.hosts[0].nftables
    assert len([c for c in cells(sc) if c.flows]) == 15 + 4
    with pytest.raises(ScenarioError, match=r"^x\.toml: host\.nftables: must be str"):
        load_text(BASE.replace('ifname = "eth0"\n', 'ifname = "eth0"\nnftables = 3\n', 1),
                  "x.toml")


def test_record_writes_pairs_rules_and_the_pairs_no_rule_describes() -> None:
    sc = scenario('''
[group]
a = ["c1", "c3"]
b = ["c2", "c4"]

[pairs]
families = ["v4"]
containers = "same-group"
why = "tenants"
''', containers=2)
    flows = [fc for c in cells(sc) if c.table for fc in c.flows]
    odd = next(fc for fc in flows if fc.flow.name == "c1-to-remote-icmp")
    seen = [(fc, "blocked" if fc is odd else fc.expected) for fc in flows]
    text = "\n".join(record.own_tables(sc, seen, "6.18.0"))
    assert '[pairs]\nprobes = ["icmp"]\nfamilies = ["v4"]\ncontainers = "same-group"\n' \
           'host = "pass"\ngateway = "pass"\nremote = "pass"\n' in text
    assert text.count("[[check]]") == 1
    assert '[[check]]\nfrom = "c1"\nto = "remote"\nproto = "icmp"\nfamily = "v4"\n' \
           'expect = "blocked"' in text


def test_more_pairs_than_the_bound_are_refused_naming_the_limit() -> None:
    spec = importlib.util.spec_from_file_location("linklab_bench_scale",
                                                  REPO / "bench" / "scale.py")
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    text = scale.scale_scenario(600, ["icmp", "tcp:80"])
    with pytest.raises(ScenarioError) as err:
        load_text(text, "big.toml")
    assert str(err.value) == ("big.toml: pairs: 722,400 pairs (600 containers x 602 destinations "
                              "x 2 probes x 1 families): linklab checks at most 500,000 per "
                              "scenario (MAX_PAIRS); give fewer probes or families")
    assert load_text(scale.scale_scenario(600, ["icmp"]), "ok.toml").pairs is not None
