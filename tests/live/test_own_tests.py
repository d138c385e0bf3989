"""Your own topologies and tests, live: ``--scenarios`` from outside the repo runs only those,
and the ``linklab_topology`` factory (leak-free, LIFO). Collection alone is in tests/unit."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from linklab.model import SHIPPED
from linklab.ownership import RECORD_DIR


@pytest.mark.connectivity
@pytest.mark.parametrize("form", ["equals", "space"])
def test_scenarios_option_from_outside_the_repo_runs_only_those(tmp_path: Path, user_scenarios,
                                                                run_pytest,
                                                                form: str) -> None:
    d = user_scenarios()
    work = tmp_path / "work"
    work.mkdir()
    opt = [f"--scenarios={d}"] if form == "equals" else ["--scenarios", str(d)]
    done = run_pytest(work, "-m", "connectivity", "-v", *opt)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    ran = re.findall(r"test_cell\[([\w-]+)\] PASSED", out)
    assert "mine-v4-child-to-child" in ran and "mine-v6-host-to-child" in ran, out[-3000:]
    assert all(r.startswith("mine-") for r in ran), ran
    assert len(ran) == 21, ran


USER_TEST = '''
import json, os
from pathlib import Path

import pytest

from linklab.netns import NetNS

LOG = Path(os.environ["LINKLAB_TEST_LOG"])
real_close = NetNS.close


def logged_close(self):
    with LOG.open("a") as fh:
        fh.write(self.name + "\\n")
    real_close(self)


NetNS.close = logged_close   # this process only: the order namespaces are deleted in


def test_mine(linklab_topology):
    a = linklab_topology("veth")                      # a bundled scenario, by name
    b = linklab_topology(Path(os.environ["LINKLAB_TEST_SCENARIO"]))   # a path
    assert str(a.addrs("c1", 4)[0]) == "198.18.10.2/24"
    assert b.exec("c1", ["ip", "-br", "addr"]).stdout.count("198.18.10.2/24") == 1
    assert b.observe("child-to-child").result == "pass"
    assert b.observe("mtu-inherit").result == "pass"
    Path(os.environ["LINKLAB_TEST_NS"]).write_text(json.dumps(
        [ns.path for t in (a, b) for ns in t.topo.namespaces.values()] +
        [[ns.name for ns in a.topo.namespaces.values()],
         [ns.name for ns in b.topo.namespaces.values()],
         [a.topo.run.record, b.topo.run.record]]))
'''


def test_topology_factory_is_leak_free_and_releases_lifo(tmp_path: Path, user_scenarios,
                                                          run_pytest) -> None:
    d = user_scenarios()
    (tmp_path / "test_user.py").write_text(USER_TEST)
    env = dict(os.environ, LINKLAB_TEST_LOG=str(tmp_path / "closed.log"),
               LINKLAB_TEST_NS=str(tmp_path / "ns.json"),
               LINKLAB_TEST_SCENARIO=str(d / "mine.toml"))
    done = run_pytest(tmp_path, "-q", "test_user.py", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    *paths, a_names, b_names, records = json.loads((tmp_path / "ns.json").read_text())
    assert paths and not [p for p in paths if os.path.exists(p)]
    for record in records:
        assert record.startswith(RECORD_DIR) and not os.path.exists(record), record
    closed = [n for n in (tmp_path / "closed.log").read_text().split()
              if n in a_names + b_names]        # (the capability probe's namespace aside)
    assert closed == [*reversed(b_names), *reversed(a_names)], closed


def test_topology_factory_takes_inline_toml_and_dicts(linklab_topology) -> None:
    import tomllib

    text = (SHIPPED / "veth.toml").read_text()
    text = text[:text.index("[expect]")]                  # [expect] is optional here
    live = linklab_topology(text)
    assert live.scenario.expect == {}
    assert live.observe("child-to-gateway", "v6").result == "pass"
    data = tomllib.loads(text.replace('name = "veth"', 'name = "veth-dict"'))
    live2 = linklab_topology(data)
    assert live2.exec("c2", ["ip", "-j", "addr"]).returncode == 0
    assert [str(a) for a in live2.addrs("c2", 6)] == ["2001:db8:0:11::2/64"]
    with pytest.raises(KeyError, match="no node 'c9'"):
        live2.exec("c9", ["true"])


@pytest.mark.linklab_scenario("macvlan-private")
def test_the_scenario_marker_names_the_topology(linklab_live) -> None:
    assert linklab_live.scenario.name == "macvlan-private"
    assert linklab_live.observe("child-to-child").result == "blocked"
