"""Ownership fixes the drill found, as ordinary tests: a run's close keeps a record that still
lists something; an interrupted drill cleans its step's run (the live ones and the drill's
"next session" are in tests/live)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from linklab import ownership
from linklab.drill import runner
from linklab.ownership import Run


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


def test_a_drill_interrupted_mid_step_stops_and_cleans_that_steps_run(
        tmp_path: Path, monkeypatch) -> None:
    """Ctrl-C while a kill or Ctrl-C point waits on its run (the fresh-clone CI of
    2026-12-06 15:52): the run, in a session of its own, is killed with its process group
    and its record directory cleaned before the drill goes; that directory is the drill's, and
    no later ``linklab clean`` reads it."""
    cleaned: list[str] = []
    real_run = subprocess.run

    def run(argv, **kw):
        if argv[1:4] == ["-m", "linklab.cli", "clean"]:
            cleaned.append(kw["env"]["LINKLAB_RECORD_DIR"])
            return subprocess.CompletedProcess(argv, 0)
        return real_run(argv, **kw)

    monkeypatch.setattr(runner.subprocess, "run", run)
    d = runner.Drill(str(tmp_path), 1, lambda _m: None)

    def step(_target: object, _trigger: object) -> dict:
        d.current = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                     start_new_session=True)
        d.current_rec = str(tmp_path / "01-sigint" / "records")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        d._guarded(step, "connectivity", "topology")
    assert d.current.returncode == -signal.SIGKILL
    assert cleaned == [str(tmp_path / "01-sigint" / "records")]
