"""The drill's nightly section without a night: its faults and the leftover check (the live
nights are `python -m linklab.drill --nightly`)."""

from __future__ import annotations

import re
import types
from pathlib import Path

from linklab.drill import nightly


def test_every_fault_has_a_trigger_and_a_cause_to_find() -> None:
    assert nightly.NIGHTLY_FAULTS == ("libvirtd killed", "ssh cut", "no address",
                                      "peer agent killed")
    for fault in nightly.FAULTS:
        re.compile(fault.trigger)
        re.compile(fault.named)
    assert [f.two_host for f in nightly.FAULTS] == [False, False, False, True]


def test_leftovers_of_a_night_that_left_nothing(tmp_path: Path) -> None:
    """A marker no night used: nothing on this machine is taken for its leftovers."""
    (tmp_path / "records").mkdir()
    night = types.SimpleNamespace(marker="zz9q", prefix="llzz9q-", records=tmp_path / "records",
                                  nightly_dir=tmp_path / "nightly")
    assert nightly.leftovers(night) == []
    (tmp_path / "records" / "zz9q.jsonl").write_text("{}\n")
    assert nightly.leftovers(night) == ["record zz9q.jsonl"]
