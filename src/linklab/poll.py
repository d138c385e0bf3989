"""Wait on a condition with a timeout (pyroute2's ``poll``) instead of sleeping by hand."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(condition: Callable[[], T], timeout: float, interval: float = 0.1, *,
         alive: Callable[[], bool] | None = None) -> T | None:
    """``condition()``'s first truthy value, asked every ``interval`` s until ``timeout`` s
    have passed or ``alive()`` turns false (what is watched has ended), then once more; None
    if it never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (alive is None or alive()):
        if got := condition():
            return got
        time.sleep(interval)
    return condition() or None
