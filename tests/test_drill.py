"""Drill helpers that run as ordinary tests (the long drill itself is ``make drill``)."""

from __future__ import annotations

import os

from linklab import ownership
from linklab.ownership import Run, read_record


def test_next_session_cleaned_every_dead_run_at_start(run: Run) -> None:
    """The drill's "next run": by the time the session's ``run`` fixture exists, no record of
    a dead run is left in the record directory (its leftovers were removed)."""
    for entry in os.listdir(ownership.RECORD_DIR):
        if ".jsonl" not in entry or entry == os.path.basename(run.record):
            continue
        left = read_record(os.path.join(ownership.RECORD_DIR, entry))
        assert ownership._alive(left.owner, getattr(left, "owner_start", None)), \
            f"{entry}: record of dead run {left.owner} was not cleaned"
