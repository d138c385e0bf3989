"""``linklab clean`` reports a process stopped only once it is gone: SIGTERM, a bounded
grace, SIGKILL, then waiting on the PID (a pidfd); one that outlives SIGKILL keeps its record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from linklab import cmd, ownership
from linklab.cmd import proc_starttime

# a process that is not our child (its parent exits at once) and ignores SIGTERM
ORPHAN = ("import os, signal, sys, time\n"
          "if os.fork():\n    sys.exit(0)\n"
          "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
          "print(os.getpid(), flush=True)\n"
          "time.sleep(600)\n")


@pytest.fixture
def orphan(process_state) -> int:
    """Function scope; process_state. A process that is not our child and ignores SIGTERM;
    killed at teardown if still there."""
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    pid = int(parent.stdout.readline())
    parent.stdout.close()
    parent.wait(timeout=30)
    yield pid
    if process_state(pid) not in ("gone", "Z"):
        os.kill(pid, signal.SIGKILL)


def dead_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pid: int) -> Path:
    monkeypatch.setattr(ownership, "RECORD_DIR", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = tmp_path / "beef.jsonl"
    record.write_text(json.dumps({"owner": dead.pid, "start": 1}) + "\n" +
                      json.dumps({"pid": pid, "start": proc_starttime(pid),
                                  "argv": ["sockperf"]}) + "\n")
    return record


def test_clean_reports_stopped_only_once_the_process_is_gone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, orphan: int, process_state) -> None:
    record = dead_record(tmp_path, monkeypatch, orphan)
    said: list[tuple[float, str]] = []
    start = time.monotonic()
    removed = ownership.clean(log=lambda m: said.append((time.monotonic(), m)))
    assert [m for _, m in said] == [f"linklab clean: stopped process {orphan} of dead run "
                                    "beef"]
    assert process_state(orphan) in ("gone", "Z"), process_state(orphan)   # when reported
    assert said[0][0] - start >= 1.0        # it ignored SIGTERM: killed after the grace
    assert len(removed) == 1 and not record.exists()


def test_a_process_that_outlives_sigkill_keeps_its_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, orphan: int, process_state) -> None:
    record = dead_record(tmp_path, monkeypatch, orphan)
    monkeypatch.setattr(cmd.signal, "pidfd_send_signal", lambda fd, sig: None)  # signals lost
    said: list[str] = []
    ownership.clean(log=said.append)
    assert len(said) == 1 and f"process {orphan} is still alive 5 s after SIGKILL" in said[0]
    assert "stopped" not in said[0] and "its record is kept" in said[0]
    assert record.exists() and process_state(orphan) not in ("gone", "Z")


def test_stop_pid_on_our_own_child_and_on_a_recycled_pid() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    start = proc_starttime(proc.pid)
    assert not cmd.stop_pid(proc.pid, start + 1)            # not the recorded process
    assert proc.poll() is None
    assert cmd.stop_pid(proc.pid, start, grace=1.0)
    assert proc.wait(timeout=1) == -signal.SIGTERM
    assert not cmd.stop_pid(proc.pid, start)                # reaped: nothing to stop
