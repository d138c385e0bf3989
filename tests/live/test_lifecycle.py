"""Build and release: nothing left behind after a normal exit, a failed build, Ctrl-C or
kill -9 (the next run's clean removes exactly what the dead run recorded)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from linklab.build import BuildError, build
from linklab.cmd import NETNS_DIR
from linklab.model import SHIPPED, load_scenario
from linklab.netns import NetNS
from linklab.ownership import Run, clean, read_record
from linklab.pytest.plugin import host_snapshot

SCENARIO = SHIPPED / "macvlan-bridge.toml"


def test_build_and_release_leave_the_default_namespace_untouched(run: Run, netns_names) -> None:
    before_snapshot, before_ns = host_snapshot(), netns_names()
    with build(load_scenario(SCENARIO), run) as topo:
        live = {ns.name for ns in topo.namespaces.values()}
        assert live <= netns_names()
        assert all(name.startswith(f"ll{run.marker}-") for name in live)
    assert netns_names() == before_ns
    assert host_snapshot() == before_snapshot


def test_a_build_that_fails_halfway_is_rolled_back(tmp_path: Path, run: Run,
                                                   netns_names) -> None:
    text = SCENARIO.read_text().replace(
        'routes = [{ to = "default", via = "198.18.0.1" }, { to = "default", via = '
        '"2001:db8:0:1::1" }]\n\n[expect]',
        'routes = [{ to = "default", via = "198.19.250.1" }]\n\n[expect]')
    bad = tmp_path / "unreachable-gateway.toml"
    bad.write_text(text)
    before = netns_names()
    with pytest.raises(BuildError, match=r"macvlan-bridge: c2: add route default: .*Network is "
                                         r"unreachable"):
        with build(load_scenario(bad), run):
            pass
    # only this run's names: other xdist workers create and delete namespaces meanwhile
    assert {n for n in netns_names() ^ before if n.startswith(run.ns_name(""))} == set()
    assert read_record(run.record).namespaces == []


HOLDER = textwrap.dedent("""
    # PR_SET_PDEATHSIG: die with the test
    import ctypes, signal; ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a CI shell may start us ignoring it
    import sys, time
    from linklab.build import build
    from linklab.model import SHIPPED, load_scenario
    from linklab.ownership import Run
    run = Run()
    with build(load_scenario(sys.argv[1]), run) as topo:
        print(run.marker, *[ns.name for ns in topo.namespaces.values()], flush=True)
        time.sleep(120)
""")


def start_holder(env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str, list[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(SCENARIO)], text=True,
                            stdout=subprocess.PIPE, env=env)
    marker, *names = proc.stdout.readline().split()  # type: ignore[union-attr]
    assert names and all(os.path.exists(f"{NETNS_DIR}/{n}") for n in names)
    return proc, marker, names


def test_ctrl_c_leaves_nothing(netns_names) -> None:
    proc, marker, names = start_holder()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    assert not set(names) & netns_names()
    assert not os.path.exists(f"/run/linklab/{marker}.jsonl") or \
        read_record(f"/run/linklab/{marker}.jsonl").namespaces == []


def test_kill_9_leftovers_are_removed_by_the_next_clean_and_decoys_survive(netns_names) -> None:
    proc, marker, names = start_holder()
    decoy = NetNS(f"ll{marker[::-1]}x-c1")   # looks like ours, was never recorded
    try:
        proc.kill()
        proc.wait(timeout=30)
        removed = clean(log=lambda _m: None)
        # another pytest session on this machine may have cleaned the dead run first
        mine = [r for r in removed if Path(r.record).stem == marker]
        assert not mine or sorted(mine[0].namespaces) == sorted(names)
        assert not set(names) & netns_names()
        assert decoy.name in netns_names()
        assert not os.path.exists(f"/run/linklab/{marker}.jsonl")
    finally:
        decoy.close()


def test_clean_leaves_live_runs_alone(run: Run, netns_names) -> None:
    with build(load_scenario(SCENARIO), run) as topo:
        clean(log=lambda _m: None)
        assert {ns.name for ns in topo.namespaces.values()} <= netns_names()


def test_linklab_clean_cli_reports_what_it_removed(tmp_path: Path, netns_names) -> None:
    # a private record directory: no concurrent pytest session can clean this dead run first
    env = os.environ | {"LINKLAB_RECORD_DIR": str(tmp_path)}
    proc, marker, names = start_holder(env)
    proc.kill()
    proc.wait(timeout=30)
    out = subprocess.run([sys.executable, "-m", "linklab.cli", "clean"], capture_output=True,
                         text=True, check=True, env=env).stdout
    for name in names:
        assert f"deleted namespace {name} of dead run {marker}" in out
    assert not set(names) & netns_names()
