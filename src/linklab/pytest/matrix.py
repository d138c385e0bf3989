"""The reachability matrix as a test: every scenario of ``--scenarios`` x family x check,
expected results as data. The plugin parametrises ``linklab_matrix`` / ``linklab_cell``;
import :func:`test_cell` into a test module to run the matrix there (tests/live/test_connectivity.py
does), or give ``--scenarios`` without a test path and the plugin collects this module."""

from __future__ import annotations

import pytest

from linklab.capabilities import missing_tool
from linklab.checks import Cell
from linklab.probes import Observer
from linklab.pytest.cells import record_observation

pytestmark = pytest.mark.connectivity


@pytest.mark.connectivity
def test_cell(request: pytest.FixtureRequest, linklab_matrix: Observer,
              linklab_cell: Cell) -> None:
    cell = linklab_cell
    if cell.check == "host-netfilter" and (why := missing_tool("nft")):
        pytest.skip(why)
    if cell.flows and linklab_matrix.topo.split is not None:
        pytest.skip("the scenario's own checks are not split across two nodes")
    seen = linklab_matrix.observe(cell)
    record_observation(request.node, seen.result, seen.detail,
                       linklab_matrix.flows(cell) if cell.table else None)
    assert seen.result == cell.expected, (
        f"{cell.id}: expected {cell.expected} ({cell.why}); observed {seen.result}: "
        f"{seen.detail}")
