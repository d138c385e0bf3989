"""What a cell test tells the plugin: the observation recorded before it asserts, which the
plugin's report hook writes next to the outcome. A leaf: the plugin and the matrix test
(:mod:`linklab.pytest.matrix`) both import it."""

from __future__ import annotations

import pytest

CELL_KEY = pytest.StashKey[dict]()


def record_observation(item: pytest.Item, observed: str, detail: str,
                       flows: list | None = None) -> None:
    """Called by a cell test before it asserts: what the kernel actually did (``flows``: a
    [pairs] cell's (FlowCheck, Observation) per pair, one results row each)."""
    item.stash[CELL_KEY] = {"observed": observed, "detail": detail, "flows": flows or []}
