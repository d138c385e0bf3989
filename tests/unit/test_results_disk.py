"""Writes into a results directory that fails (disk full, read-only) keep whole rows and leave
no temporary file; the live half fills and remounts a tmpfs mid-run
(tests/live/test_results_disk.py)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest

from linklab import results as store


def _full_after(limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write lands ``limit`` more bytes, then fails with ENOSPC (a disk filling)."""
    left = [limit]
    real = os.write

    def write(fd: int, data: bytes) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real(fd, bytes(data[:left[0]]))
        left[0] -= n
        return n

    monkeypatch.setattr(os, "write", write)


def test_a_row_cut_short_by_a_full_disk_is_taken_back(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk took 10 bytes of the third row: they are truncated away, so the file keeps
    two whole rows and the error names it."""
    rd = store.RunDir.create(tmp_path, "run")
    row = {"scenario": "veth", "outcome": "passed"}
    rd.append("connectivity", row)
    rd.append("connectivity", row)
    size = (rd.path / "connectivity.jsonl").stat().st_size
    _full_after(10, monkeypatch)
    with pytest.raises(store.ResultsError, match=f"cannot write {rd.path}/connectivity.jsonl: "
                                                 "No space left on device"):
        rd.append("connectivity", row)
    assert (rd.path / "connectivity.jsonl").stat().st_size == size
    assert len(rd.rows("connectivity")) == 2


def test_a_file_the_disk_cannot_hold_is_not_left_half_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """atomic_write and the parquet: the old file stays, no temporary file is left."""
    (tmp_path / "meta.json").write_text("{}")

    def full(*_a: object, **_k: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(store.ResultsError, match="meta.json"):
        store.atomic_write(tmp_path / "meta.json", "{" * 1000)
    assert (tmp_path / "meta.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.json"]

    rd = store.RunDir.create(tmp_path, "run")
    rd.append("connectivity", {"scenario": "veth", "outcome": "passed"})
    monkeypatch.undo()

    def half(self: pd.DataFrame, path: Path, **_k: object) -> None:
        Path(path).write_bytes(b"PAR1 half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", half)
    with pytest.raises(store.ResultsError, match="connectivity.parquet"):
        rd.finalise("connectivity")
    assert sorted(p.name for p in rd.path.iterdir()) == ["connectivity.csv",
                                                         "connectivity.jsonl", "raw"]
