"""linklab.poll: a condition's first truthy value, bounded by a timeout or by what it watches."""

from __future__ import annotations

import time

from linklab.poll import poll


def test_poll_returns_the_first_truthy_value() -> None:
    asked = iter([None, 0, "", "found", "later"])
    assert poll(lambda: next(asked), timeout=5, interval=0) == "found"


def test_poll_gives_none_at_the_timeout_after_one_last_look() -> None:
    calls = []
    t0 = time.monotonic()
    assert poll(lambda: calls.append(1), timeout=0.2, interval=0.05) is None
    assert 0.2 <= time.monotonic() - t0 < 2 and len(calls) >= 3


def test_poll_stops_when_what_it_watches_ended_and_looks_once_more() -> None:
    seen = iter(["the last line"])
    t0 = time.monotonic()
    assert poll(lambda: next(seen), timeout=60, interval=0, alive=lambda: False) == \
        "the last line"
    assert time.monotonic() - t0 < 1
