"""``linklab clean`` and a tracefs instance whose record is gone with its directory (a drill's
or a test's record directory removed before anyone cleaned it): removed once the PID its
name carries is dead and no record lists it; never another user's live one."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from linklab import ownership
from linklab.anatomy import tracefs

DEAD = 2 ** 22 + 7          # above any pid_max: never a live process
DEAD_TOO = 2 ** 22 + 9


@pytest.fixture
def fake_tracefs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Function scope; monkeypatch. ``tracefs.mounted`` yields a directory with an
    ``instances/`` of plain directories; the records go to ``tmp_path/records``."""
    root = tmp_path / "tracefs"
    (root / "instances").mkdir(parents=True)

    @contextmanager
    def mounted() -> Iterator[int]:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            yield fd
        finally:
            os.close(fd)

    monkeypatch.setattr(tracefs, "mounted", mounted)
    monkeypatch.setattr(ownership, "RECORD_DIR", str(tmp_path / "records"))
    return root / "instances"


def _make(instances: Path, *names: str) -> None:
    for name in names:
        (instances / name).mkdir()


def test_an_instance_no_record_lists_goes_once_its_maker_is_dead(fake_tracefs: Path) -> None:
    """The instance left on this machine (linklab-08f0-anatomy-6072, its record gone with the
    drill's work directory) and its frees sibling go; a live PID's (another user's run,
    recorded in another directory), one a live record lists, and names the anatomy does not
    give stay."""
    live_listed = f"linklab-cd34-anatomy-{DEAD_TOO}"
    _make(fake_tracefs, f"linklab-08f0-anatomy-{DEAD}", f"linklab-08f0-anatomy-frees-{DEAD}",
          f"linklab-ab12-anatomy-{os.getpid()}", live_listed,
          f"linklab-test-{DEAD}", f"linklab-08f0-bench-{DEAD}", "perf-session")
    run = ownership.Run()                       # alive: this process
    run.own_object(tracefs.KIND, live_listed)
    said: list[str] = []
    removed = ownership.clean(log=said.append)
    assert sorted(ident for r in removed for (_k, ident) in r.objects) == [
        f"linklab-08f0-anatomy-{DEAD}", f"linklab-08f0-anatomy-frees-{DEAD}"]
    assert all(r.unrecorded and r.owner == DEAD for r in removed)
    assert sorted(p.name for p in fake_tracefs.iterdir()) == sorted([
        f"linklab-ab12-anatomy-{os.getpid()}", live_listed, f"linklab-test-{DEAD}",
        f"linklab-08f0-bench-{DEAD}", "perf-session"])
    assert f"linklab clean: removed tracefs linklab-08f0-anatomy-{DEAD} of dead process " \
           f"{DEAD} (no record listed it)" in said
    run.close()


def test_the_kernels_busy_is_a_live_holder_whatever_the_pid_says(
        fake_tracefs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run holds a file of its instance open while it lives, so the kernel refuses rmdir
    (EBUSY) even where its PID looks dead (another PID namespace): clean leaves it, and a
    dead record listing such an instance is kept for the next clean."""
    busy = f"linklab-77aa-anatomy-{DEAD}"
    _make(fake_tracefs, busy)

    def refuse(ident: str, data: dict) -> bool:
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))

    monkeypatch.setattr(tracefs, "owned_remove", refuse)
    said: list[str] = []
    assert ownership.clean(log=said.append) == []
    assert (fake_tracefs / busy).is_dir()
    assert any(f"tracefs {busy} is in use" in m for m in said), said
    dead = ownership.Run()
    dead.own_object(tracefs.KIND, busy)
    dead._fh.close()
    record = Path(dead.record)
    lines = record.read_text().splitlines()
    lines[0] = f'{{"owner": {DEAD_TOO}, "start": 1}}'
    record.write_text("\n".join(lines) + "\n")
    ownership.clean(log=said.append)
    assert record.exists() and (fake_tracefs / busy).is_dir()


def test_no_tracefs_here_is_nothing_of_ours(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    """Not root or no CONFIG_TRACING: clean finds no instance and says nothing of tracefs."""
    monkeypatch.setattr(ownership, "RECORD_DIR", str(tmp_path / "none"))
    assert tracefs.owned_by_name() == {}
    assert ownership.clean(log=lambda _m: None) == []


@pytest.mark.parametrize("name, pid", [
    ("linklab-08f0-anatomy-6072", 6072),
    ("linklab-08f0-anatomy-frees-6072", 6072),
    ("linklab-08f0-anatomy-6072x", None),
    ("linklab-08f0-anatomy-0", None),
    ("linklab-test-6072", None),
    ("linklab-08f0-anatomy-", None),
])
def test_the_names_the_anatomy_gives(name: str, pid: int | None) -> None:
    m = tracefs.OWNED_NAME.match(name)
    assert (int(m["pid"]) if m else None) == pid
