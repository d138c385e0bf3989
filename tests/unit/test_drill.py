"""An ownership fix the drill found, as an ordinary test: a run's close keeps a record that
still lists something (the live ones and the drill's "next session" are in tests/live)."""

from __future__ import annotations

import os
from pathlib import Path

from linklab import ownership
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
