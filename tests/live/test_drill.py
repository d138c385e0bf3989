"""Drill helpers and the ownership fixes the drill found, as ordinary tests (the long drill
itself is ``make drill``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from linklab import ownership
from linklab.cmd import proc_starttime
from linklab.ownership import Run, read_record


def test_next_session_cleaned_every_dead_run_at_start(run: Run) -> None:
    """The drill's "next run": once the session's ``run`` fixture exists, no record of a run
    that died before this session started is left (its leftovers were removed)."""
    started = os.stat(run.record).st_mtime
    for entry in os.listdir(ownership.RECORD_DIR):
        path = os.path.join(ownership.RECORD_DIR, entry)
        if ".jsonl" not in entry or path == run.record:
            continue
        try:
            left, mtime = read_record(path), os.stat(path).st_mtime
        except FileNotFoundError:
            continue           # cleaned meanwhile by another session
        if mtime < started - 1 and ".clean-" not in entry:
            assert ownership._alive(left.owner, getattr(left, "owner_start", None)), \
                f"{entry}: record of dead run {left.owner} was not cleaned"


HOLDER = textwrap.dedent("""
    import ctypes, signal; ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the test
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


def test_run_close_keeps_a_record_that_still_lists_something(tmp_path: Path,
                                                              monkeypatch) -> None:
    monkeypatch.setattr(ownership, "RECORD_DIR", str(tmp_path))
    (tmp_path / "never-released").mkdir()
    interrupted = Run()
    interrupted.own_path(str(tmp_path / "never-released"))
    interrupted.close()
    assert os.path.exists(interrupted.record)       # for the next clean
    tidy = Run()
    tidy.own_path(str(tmp_path / "released"))
    tidy.disown_path(str(tmp_path / "released"))
    tidy.close()
    assert not os.path.exists(tidy.record)
    # listed but already gone (Ctrl-C between deleting and disowning): nothing to keep
    gone = Run()
    gone.own_path(str(tmp_path / "removed-before-disown"))
    gone.own_namespace("ll0000-never-created")
    gone.close()
    assert not os.path.exists(gone.record)
