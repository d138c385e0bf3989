"""Run independent cells ahead of their tests, a few at a time, in threads.

A DHCP cell is mostly waiting: for its server to start, and in a cell expected to get no lease,
for its clients to give up (2-5 s). In a one-vCPU VM guest those waits leave the CPU idle, so
``--cells-ahead N`` lets the session run up to N such cells at once, each in a thread with
an ownership record of its own (so its namespaces carry their own names), and each test
then waits for its own cell's observation and asserts as before. Results are handed over
unchanged (an exception is raised in the test that owns the cell). Off (N = 1) by default and
under xdist (a worker does not know which tests it will be given); the VM leg's guests use
it. What a cell measures in seconds (``lease_s``, ``server_start_s``) includes the other
cells' CPU then, and under TCG it never was a benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest


class Ahead:
    """Up to ``n`` cells at once; :meth:`result` returns a cell's outcome (run now if it was
    never submitted)."""

    def __init__(self, n: int) -> None:
        self.pool = ThreadPoolExecutor(n, thread_name_prefix="linklab-ahead") if n > 1 else None
        self.futures: dict[str, Future] = {}

    def submit(self, key: str, fn: Callable[[], Any]) -> None:
        if self.pool is not None and key not in self.futures:
            self.futures[key] = self.pool.submit(fn)

    def result(self, key: str, fn: Callable[[], Any]) -> Any:
        future = self.futures.pop(key, None)
        return fn() if future is None else future.result()

    def close(self) -> None:
        """Cancel what has not started; wait for the running cells (they release what they
        built themselves)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        self.futures.clear()


def cells_ahead(config: pytest.Config) -> int:
    """``--cells-ahead``, or 1 inside an xdist worker."""
    return 1 if hasattr(config, "workerinput") else max(1, config.getoption("--cells-ahead") or 1)
