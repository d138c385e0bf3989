"""Owned objects of other kinds (OBJECT_KINDS): recorded before creation, removed LIFO by
their kind's module when the owning run is dead, left alone while it lives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from linklab import ownership
from linklab.cmd import proc_starttime


@pytest.fixture
def marker_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A throw-away object kind whose objects are marker files; returns the removal order."""
    removed: list[str] = []
    mod = types.ModuleType("linklab_test_marker_kind")
    mod.owned_exists = lambda ident, data: Path(data["file"]).exists()

    def owned_remove(ident: str, data: dict) -> bool:
        f = Path(data["file"])
        if not f.exists():
            return False
        f.unlink()
        removed.append(ident)
        return True

    mod.owned_remove = owned_remove
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setitem(ownership.OBJECT_KINDS, "marker", mod.__name__)
    monkeypatch.setattr(ownership, "RECORD_DIR", str(tmp_path / "records"))
    return removed


def test_dead_runs_objects_are_removed_last_created_first(tmp_path: Path,
                                                          marker_kind: list[str]) -> None:
    run = ownership.Run()
    files = []
    for ident in ("a", "b", "gone"):
        f = tmp_path / ident
        run.own_object("marker", ident, file=str(f))
        f.write_text("x")
        files.append(f)
    files[2].unlink()
    run.disown_object("marker", "gone")
    run.close()                       # a and b still exist: the record stays
    # the record now belongs to a dead process
    lines = Path(run.record).read_text().splitlines()
    lines[0] = json.dumps({"owner": 2 ** 22 + 7, "start": 1})
    Path(run.record).write_text("\n".join(lines) + "\n")
    removed = ownership.clean(log=lambda _m: None)
    assert [list(r.objects) for r in removed] == [[("marker", "a"), ("marker", "b")]]
    assert marker_kind == ["b", "a"]
    assert not any(f.exists() for f in files)
    assert not Path(run.record).exists()


def test_a_live_runs_objects_are_left_alone_and_keep_its_record(tmp_path: Path,
                                                                 marker_kind: list[str]) -> None:
    run = ownership.Run()
    f = tmp_path / "live"
    run.own_object("marker", "live", file=str(f))
    f.write_text("x")
    assert ownership.clean(log=lambda _m: None) == []
    assert f.exists()
    run.close()                       # it still exists: the record stays for the next clean
    assert Path(run.record).exists()


def test_an_unknown_kind_is_refused_before_anything_is_recorded(marker_kind: list[str]) -> None:
    run = ownership.Run()
    with pytest.raises(KeyError, match="unknown object kind 'nope'"):
        run.own_object("nope", "x")
    run.close()


def test_a_pin_held_by_a_process_lasts_only_while_that_process_lives(
        tmp_path: Path, marker_kind: list[str]) -> None:
    """``linklab up --held-by PID``: clean leaves the pinned record alone while PID lives and
    removes it like a dead run's once PID is gone; an unheld pin is never removed by clean."""
    def pinned_record(ident: str, holder: dict | None) -> Path:
        run = ownership.Run()
        f = tmp_path / ident
        run.own_object("marker", ident, file=str(f))
        f.write_text("x")
        run.pin(ident, held_by=holder)
        run.close()                   # the object still exists: the record stays
        lines = Path(run.record).read_text().splitlines()
        lines[0] = json.dumps({"owner": 2 ** 22 + 7, "start": 1})     # the `up` process ended
        Path(run.record).write_text("\n".join(lines) + "\n")
        return f

    live = pinned_record("live", {"pid": os.getpid(), "start": proc_starttime(os.getpid())})
    dead = pinned_record("dead", {"pid": 2 ** 22 + 9, "start": 1})
    unheld = pinned_record("unheld", None)
    ownership.clean(log=lambda _m: None)
    assert marker_kind == ["dead"]
    assert live.exists() and unheld.exists() and not dead.exists()


def test_a_zombie_counts_as_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, poll,
                                  process_state) -> None:
    """A process that exited and waits to be reaped holds nothing: a run listing only a zombie
    leaves no record at close, one listing a living process keeps it."""
    monkeypatch.setattr(ownership, "RECORD_DIR", str(tmp_path))
    child = subprocess.Popen(["true"])
    start = proc_starttime(child.pid)
    assert poll(lambda: process_state(child.pid) == "Z", timeout_s=5)   # exited, not reaped
    zombie = ownership.Run()
    zombie.own_pid(child.pid, start, ["true"])
    zombie.close()
    assert not Path(zombie.record).exists()
    child.wait()
    living = ownership.Run()
    living.own_pid(os.getpid(), proc_starttime(os.getpid()), ["pytest"])
    living.close()
    assert Path(living.record).exists()
