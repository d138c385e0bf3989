"""The reachability matrix: every scenario x family x check, expected results as data.

Each topology is built once (module-scoped, reused across its cells) and all its packet
cells are observed in one batch; each test asserts one cell against its expectation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from linklab.build import build
from linklab.capabilities import missing_link, missing_tool
from linklab.checks import Cell, cells
from linklab.model import Scenario, load_all
from linklab.pytest.plugin import record_observation
from linklab.probes import Observer

SCENARIOS = load_all(Path(__file__).resolve().parents[1] / "scenarios")
CASES = [pytest.param(sc, cell, id=cell.id, marks=[pytest.mark.xdist_group(sc.name)])
         for sc in SCENARIOS for cell in cells(sc)]

pytestmark = pytest.mark.connectivity


@pytest.fixture(scope="module")
def topology(request: pytest.FixtureRequest, run) -> Iterator[Observer]:  # noqa: ANN001
    """The live topology of one scenario (built once per scenario, torn down LIFO)."""
    sc: Scenario = request.param
    for h in sc.hosts:
        if why := missing_link(h.kind, h.mode, h.flag):
            pytest.skip(why)
    with build(sc, run) as topo:
        yield Observer(topo, cells(sc))


@pytest.mark.parametrize("topology, cell", CASES, indirect=["topology"], scope="module")
def test_cell(request: pytest.FixtureRequest, topology: Observer, cell: Cell) -> None:
    if cell.check == "host-netfilter" and (why := missing_tool("nft")):
        pytest.skip(why)
    seen = topology.observe(cell)
    record_observation(request.node, seen.result, seen.detail)
    assert seen.result == cell.expected, (
        f"{cell.id}: expected {cell.expected} ({cell.why}); observed {seen.result}: "
        f"{seen.detail}")
