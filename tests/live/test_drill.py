"""Drill helpers and the ownership fixes the drill found, as ordinary tests, live (the long
drill itself is ``make drill``; the unit ones are in tests/unit)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from linklab.cmd import proc_starttime

# a run that dies without releasing anything: its record and its directory stay
DEAD_RUN = textwrap.dedent("""
    import os, sys
    from linklab.ownership import Run
    run = Run()
    run.own_path(sys.argv[1])
    os.mkdir(sys.argv[1])
    print(run.record, flush=True)
    os._exit(0)
""")


@pytest.mark.usefixtures("run")   # the drill runs this as its next session (drill/runner.py)
def test_next_session_cleaned_every_dead_run_at_start(tmp_path: Path) -> None:
    """The drill's "next run": a pytest session whose ``run`` fixture exists has removed what
    a run that died before it left behind; here a dead run of this test's own, in a record
    directory of its own, and a session of its own."""
    env = os.environ | {"LINKLAB_RECORD_DIR": str(tmp_path / "records")}
    left = tmp_path / "left-by-a-dead-run"
    record = subprocess.run([sys.executable, "-c", DEAD_RUN, str(left)], env=env, text=True,
                            capture_output=True, check=True, timeout=60).stdout.strip()
    assert left.is_dir() and os.path.exists(record)
    (tmp_path / "test_next.py").write_text("def test_next(run):\n    pass\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--results-dir={tmp_path / 'results'}", "test_next.py"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert "1 passed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert not left.exists(), "the next session did not remove the dead run's directory"
    assert not os.path.exists(record), "the next session left the dead run's record"


HOLDER = textwrap.dedent("""
    # PR_SET_PDEATHSIG: die with the test
    import ctypes, signal; ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    import subprocess, time
    from linklab.cmd import wrap
    from linklab.netns import NetNS
    from linklab.ownership import Run
    run = Run()
    name = run.ns_name("drill")
    run.own_namespace(name)
    ns = NetNS(name)
    # a tool started the way cmd() starts one: never recorded, it lives in the namespace
    p = subprocess.Popen(wrap(["sleep", "300"], ns), start_new_session=True)
    print(run.marker, name, p.pid, flush=True)
    time.sleep(300)
""")


def alive(pid: int, start: int | None) -> bool:
    """Running (not a zombie waiting for whichever reaper adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return proc_starttime(pid) == start and stat.rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")


def test_clean_stops_an_unrecorded_process_inside_a_dead_runs_namespace(tmp_path: Path) -> None:
    env = os.environ | {"LINKLAB_RECORD_DIR": str(tmp_path)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True,
                              env=env)
    _marker, name, pid = holder.stdout.readline().split()  # type: ignore[union-attr]
    start = proc_starttime(int(pid))
    holder.kill()
    holder.wait(timeout=30)
    assert alive(int(pid), start)                  # orphaned, still running
    out = subprocess.run([sys.executable, "-m", "linklab.cli", "clean"], capture_output=True,
                         text=True, check=True, env=env).stdout
    assert f"stopped process {pid} in namespace {name}" in out
    assert not alive(int(pid), start)
    assert not os.path.exists(f"/run/netns/{name}")


