"""A split session stops at the first dead peer agent: the real peer client (its agent a fake
that SIGKILLs itself at its second request) in a real pytest session with the linklab plugin
and ``--remote-env``; the tests after it are not run (no agent started) and said so, the death
is said once (no second error at teardown), and ci/nightly's summary names the cause with one
broken cell and the count not run (a drill night said "105 cells broke" and ran on 230 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

SAMPLE = {
    "conftest.py": '''
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from linklab.twohost.peer import PeerClient, PeerConfig

# the agent: its hello, then one answer per request, until it kills itself at request DIE_AT
AGENT = """import json, os, signal, sys
print(json.dumps({"kernel": "fake", "facts": {}, "marker": "fake", "namespaces": []}), flush=True)
for n, line in enumerate(sys.stdin):
    if n == DIE_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    print(json.dumps({"facts": {}}), flush=True)
"""


class FakeRemote:
    target = "root@198.19.0.12"

    def __init__(self, die_at: int) -> None:
        self.die_at = die_at

    def wrap(self, argv, ns=None):
        return [sys.executable, "-c", AGENT.replace("DIE_AT", str(self.die_at))]


class FakeRun:
    def own_pid(self, *args): pass
    def disown_pid(self, *args): pass


@pytest.fixture(scope="module")
def agent(request):
    """One agent per scenario, as linklab_matrix's split_build starts one."""
    name = request.param
    with open("started.txt", "a") as fh:
        fh.write(name + "\\n")
    cfg = PeerConfig(FakeRemote(1 if name == "twohost-a" else 99), "l2a", None, "l2b", None,
                     sys.executable, ("host2",), Path("node.env"))
    client = PeerClient(cfg, SimpleNamespace(name=name, path=__file__),
                        SimpleNamespace(peer_hosts={"host2"}, peer_host="host2"), FakeRun())
    yield client
    client.close()
''',
    "test_split.py": '''
import pytest

CELLS = [pytest.param(sc, check, id=f"{sc}-v4-{check}") for sc in ("twohost-a", "twohost-b")
         for check in ("child-to-child", "neigh", "child-to-gateway")]


@pytest.mark.two_host
@pytest.mark.parametrize("agent, check", CELLS, indirect=["agent"], scope="module")
def test_cell(agent, check):
    agent.request("facts")
''',
}


def test_a_dead_peer_agent_stops_the_split_and_is_named_once(tmp_path: Path,
                                                            ci_nightly) -> None:
    for name, text in SAMPLE.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "node.env").write_text("LINKLAB_REMOTE_TYPE=ssh\n")
    night = tmp_path / "20260105T010000Z"
    junit = night / "node-a" / "results" / f"{night.name}-two-host" / "junit-host.xml"
    res = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "linklab.pytest.plugin", "--remote-env=node.env", f"--results-dir={tmp_path}/results",
         "--run-id=stop", f"--junitxml={junit}", "-rs"], cwd=tmp_path, check=False,
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert res.returncode == 1, res.stdout + res.stderr
    # the second scenario's agent was never started; its cells and the rest of the first's
    # are skipped as not run, naming where the agent died
    assert (tmp_path / "started.txt").read_text().split() == ["twohost-a"]
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert len(cases) == 6
    died = cases["test_cell[twohost-a-v4-neigh]"]
    assert [e.tag for e in died if e.tag in ("error", "failure")] == ["failure"]  # said once
    assert "AgentGone" in died.find("failure").get("message")
    not_run = [n for n, c in cases.items() if c.find("skipped") is not None]
    assert len(not_run) == 4
    assert all(cases[n].find("skipped").get("message").startswith(
        "not run: the peer agent died in test_cell[twohost-a-v4-neigh]") for n in not_run)
    assert not any(c.find("error") is not None for c in cases.values())

    assert ci_nightly.two_host_summary(night) == ci_nightly.EXIT_BROKEN
    out = json.loads((night / "two-host.json").read_text())
    assert out["cause"] == (
        "the peer agent on node-b died mid-cell (twohost-a-v4-neigh; 1 cell broke, 4 split "
        "tests not run): the agent died (killed by signal 9)")
    assert out["total"] == {"passed": 1, "failed": 1, "error": 0, "skipped": 0, "not_run": 4}
