"""ci/nightly names why a night broke: from each step's exit code and output tail, the night's
guard (--local: its libvirtd, the nodes' addresses) and the two-host JUnit file. Fake steps
only; the live faults are `make drill DRILL=--nightly` (src/linklab/drill/nightly.py)."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from linklab.nightly import causes
from tests.unit.test_vagrant import Machines, config

UP_TAIL = """==> node-b: Waiting for domain to get an IP address...
An error occurred while executing multiple actions in parallel.
Any errors that occurred are shown below.

An error occurred while executing the action on the 'node-b'
machine. Please handle this error then try again:

Timed out while waiting for the machine to boot. This means that"""


def pytest_step(ci_nightly, cfg, node: str):
    return next(s for s in ci_nightly.make_plan(cfg).body
                if s.argv[0] == "ssh" and "pytest" in s.argv[-1] and node in s.argv)


def test_ssh_lost_mid_step_names_the_node_and_step(tmp_path: Path, ci_nightly) -> None:
    cfg = config(ci_nightly, tmp_path)
    step = pytest_step(ci_nightly, cfg, "node-a")
    ran = ci_nightly.Ran(255, "....\nTimeout, server node-a not responding.")
    assert ci_nightly.name_cause(step, ran, cfg.nodes, 83.4) == (
        "ssh to node-a lost mid-step (exit 255: Timeout, server node-a not responding.) "
        "during 'connectivity suite and benchmarks on node-a', after 83 s")
    refused = ci_nightly.Ran(255, "ssh: connect to host 198.18.200.5 port 22: Connection refused")
    assert ci_nightly.name_cause(step, refused, cfg.nodes, 1).startswith(
        "ssh to node-a could not connect (exit 255: ssh: connect to host")


def test_vagrant_up_names_the_node_and_vagrants_words(tmp_path: Path, ci_nightly) -> None:
    cfg = config(ci_nightly, tmp_path)
    up = next(s for s in ci_nightly.make_plan(cfg).body if s.argv[:2] == ("vagrant", "up"))
    assert ci_nightly.name_cause(up, ci_nightly.Ran(1, UP_TAIL), cfg.nodes, 612) == (
        "vagrant up: node-b: Timed out while waiting for the machine to boot. This means that "
        "(exit 1, after 612 s)")
    # the guard's own cause wins over the tail (it stopped the step)
    guarded = ci_nightly.Ran(125, UP_TAIL, "node-b never got an address within 300 s")
    assert ci_nightly.name_cause(up, guarded, cfg.nodes, 1) == \
        "node-b never got an address within 300 s"


class LostNodeA(Machines):
    """node-a's ssh drops during its suite; every other step works."""

    def __call__(self, step, env):
        rc = super().__call__(step, env)
        if step.argv[0] == "ssh" and "pytest" in step.argv[-1] and "node-a" in step.argv:
            return ci_nightly_mod().Ran(255, "Timeout, server node-a not responding.")
        return rc


def ci_nightly_mod():
    return sys.modules["linklab_ci_nightly"]


def test_lost_node_is_not_reached_again_and_the_night_names_it(tmp_path: Path,
                                                               ci_nightly, capsys) -> None:
    cfg = config(ci_nightly, tmp_path)
    machines = LostNodeA()
    assert ci_nightly.execute(ci_nightly.make_plan(cfg), machines) == ci_nightly.EXIT_BROKEN
    assert not any(c[0] == "rsync" and any(a.startswith("node-a:") for a in c)
                   for c in machines.calls), "node-a's results must not be fetched once lost"
    assert any(c[0] == "rsync" and "node-b:/vagrant/results/" in c for c in machines.calls)
    assert machines.calls[-1][:2] == ("vagrant", "destroy")
    record = json.loads((cfg.night / "nightly.json").read_text())
    assert record["cause"].startswith("ssh to node-a lost mid-step (exit 255")
    assert any(s.get("skipped") == "node-a" for s in record["steps"])
    assert f"nightly {cfg.stamp}: broken: ssh to node-a lost mid-step" in capsys.readouterr().out


class GuardStops(Machines):
    """The night's guard stops node-a's suite: its libvirtd died."""

    def __call__(self, step, env):
        rc = super().__call__(step, env)
        if step.argv[0] == "ssh" and "pytest" in step.argv[-1]:
            return ci_nightly_mod().Ran(125, "", "libvirtd (pid 42) died mid-night")
        return rc


def test_guard_cause_stops_the_night_and_destroy_still_runs(tmp_path: Path, ci_nightly) -> None:
    cfg = config(ci_nightly, tmp_path)
    machines = GuardStops()
    assert ci_nightly.execute(ci_nightly.make_plan(cfg), machines) == ci_nightly.EXIT_BROKEN
    assert sum(c[0] == "ssh" and "pytest" in c[-1] for c in machines.calls) == 1
    assert machines.calls[-1][:2] == ("vagrant", "destroy")
    record = json.loads((cfg.night / "nightly.json").read_text())
    assert record["cause"] == "libvirtd (pid 42) died mid-night"
    assert "no results came back from node-a" in record["causes"]


def test_run_step_keeps_the_tail_and_a_guard_stops_it(ci_nightly, tmp_path: Path) -> None:
    step = ci_nightly.Step("noisy", ("sh", "-c", "echo out; echo err >&2; exit 3"))
    ran = ci_nightly.run_step(step, {})
    assert ran.rc == 3 and "out" in ran.tail and "err" in ran.tail and not ran.cause
    t0 = time.monotonic()
    asked = []
    # (an xdist worker may ignore SIGTERM, and a child inherits that: the step restores it)
    stuck = ci_nightly.Step("stuck", (sys.executable, "-c", "import signal, time; signal.signal("
                                      "signal.SIGTERM, signal.SIG_DFL); time.sleep(60)"))
    ran = ci_nightly.run_step(stuck, {}, lambda s: asked.append(s) or "the guard's cause")
    assert ran == ci_nightly.Ran(125, "", "the guard's cause")
    assert time.monotonic() - t0 < 10 and asked == [stuck]
    late = dataclasses.replace(stuck, title="late", timeout_s=1)
    ran = ci_nightly.run_step(late, {})
    assert ran.rc == 124 and ran.cause == "late: timed out after 1 s"


class FakeLibvirt:
    """node-a gets a lease at once; node-b runs and never does."""

    class names:
        @staticmethod
        def network(role: str) -> str:
            return f"llabcd-{role}"

    def __init__(self) -> None:
        self.dead: str | None = None

    def daemon_died(self) -> str | None:
        return self.dead

    def address(self, node: str) -> tuple[bool, str | None]:
        return True, "198.18.200.10" if node == "node-a" else None


def test_guard_names_a_node_without_an_address_and_a_dead_libvirtd(tmp_path: Path,
                                                                   ci_nightly) -> None:
    now = [1000.0]
    env = FakeLibvirt()
    guard = ci_nightly.NightGuard(env, ("node-a", "node-b"), 300, {"destroy the nodes"},
                                  clock=lambda: now[0])
    up = ci_nightly.Step("bring the nodes up", ("vagrant", "up"))
    assert guard(up) is None
    assert guard.addresses["node-a"] == {"address": "198.18.200.10", "seconds": 0.0}
    now[0] += 301
    assert guard(up) == ("node-b never got an address within 300 s of its start "
                         "(no DHCP lease on llabcd-mgmt)")
    env.dead = "libvirtd (pid 7) died mid-night"
    suite = ci_nightly.Step("suite on node-a", ("ssh", "node-a"))
    assert guard(suite) == "libvirtd (pid 7) died mid-night, during 'suite on node-a'"
    assert guard(ci_nightly.Step("destroy the nodes", ("vagrant", "destroy"))) is None


def test_two_host_names_the_dead_peer_agent(tmp_path: Path, ci_nightly) -> None:
    night = tmp_path / "20260105T010000Z"
    junit = night / "node-a" / "results" / f"{night.name}-two-host" / "junit-host.xml"
    junit.parent.mkdir(parents=True)
    died = ("linklab.twohost.peer.PeerError: peer root@198.19.0.12 (twohost-bridge: host2): "
            "the agent died (exit 255: ssh's, the agent was killed or the link dropped) "
            "(argv: ssh ...)")
    junit.write_text(
        "<testsuites><testsuite>"
        '<testcase name="test_cell[twohost-bridge-v4-child-to-child]"/>'
        f'<testcase name="test_cell[twohost-bridge-v4-neigh]"><failure message="{died}"/>'
        "</testcase>"
        '<testcase name="test_cell[twohost-bridge-v6-neigh]"><error message="teardown"/>'
        "</testcase></testsuite></testsuites>")
    assert ci_nightly.two_host_summary(night) == ci_nightly.EXIT_BROKEN
    out = json.loads((night / "two-host.json").read_text())
    assert out["cause"] == (
        "the peer agent on node-b died mid-cell (twohost-bridge-v4-neigh; 2 cells broke, 0 split "
        "tests not run): the agent died (exit 255: ssh's, the agent was killed or the link "
        "dropped)")
    # a split DHCP cell (not counted here) whose agent died breaks the night too
    junit.write_text(
        "<testsuites><testsuite>"
        '<testcase name="test_cell[twohost-bridge-v4-child-to-child]"/>'
        f'<testcase name="test_dhcp_cell[dhcp-twohost-macvlan-v4]"><failure message="{died}"/>'
        "</testcase></testsuite></testsuites>")
    assert ci_nightly.two_host_summary(night) == ci_nightly.EXIT_BROKEN
    assert json.loads((night / "two-host.json").read_text())["cause"].startswith(
        "the peer agent on node-b died mid-cell (test_dhcp_cell[dhcp-twohost-macvlan-v4]; 1 ")
    junit.write_text('<testsuites><testsuite><testcase name="test_cell[twohost-veth-v4-neigh]">'
                     '<error message="CmdError: ip link add failed"/></testcase>'
                     "</testsuite></testsuites>")
    assert ci_nightly.two_host_summary(night) == ci_nightly.EXIT_BROKEN
    assert json.loads((night / "two-host.json").read_text())["cause"] == \
        "1 two-host cells errored, the first twohost-veth-v4-neigh: CmdError: ip link add failed"


def test_the_command_names_causes_with_linklab_nightly(ci_nightly) -> None:
    """ci/nightly keeps its plan and steps; the causes and the guard are the module's."""
    for name in ("Ran", "NightGuard", "name_cause", "step_nodes", "two_host_cause"):
        assert getattr(ci_nightly, name) is getattr(causes, name)


def test_step_nodes_reads_ssh_hosts_and_rsync_targets() -> None:
    class S:                 # a step as the module reads it: title, argv, verdict
        title, verdict = "s", False

        def __init__(self, *argv: str) -> None:
            self.argv = argv

    nodes = ("node-a", "node-b")
    assert causes.step_nodes(S("ssh", "-F", "cfg", "node-b", "--", "true"), nodes) == ["node-b"]
    assert causes.step_nodes(S("rsync", "-a", "node-a:/vagrant/results/", "/x/"), nodes) == \
        ["node-a"]
    assert causes.step_nodes(S("vagrant", "up", "node-a"), nodes) == []
    gone = causes.name_cause(S("ssh", "node-a", "--", "pytest"), causes.Ran(255, ""), nodes, 9)
    assert gone == "ssh to node-a lost mid-step (exit 255) during 's', after 9 s"
