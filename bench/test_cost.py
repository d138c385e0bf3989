"""``pytest --vm --vm-clock=instructions -m cost``: the instructions each datapath costs per
byte, packet, round trip, echo and connection, on both paths (c2 -> c1, remote -> c1).

On the instruction clock a figure is an instruction count: its repetitions agree to a fraction
of a percent, so the smoke (``--cost-smoke``) asserts its own repeatability.
"""

from __future__ import annotations

import json
import os

import pytest

from linklab.bench import cost
from linklab.bench.datapaths import VETH_PAIR, Datapath
from linklab.capabilities import missing_tool
from linklab.pytest.cost import SMOKE_SPREAD_PCT, CostRun, check_missing
from linklab.results import atomic_write

pytestmark = pytest.mark.cost


def test_cost(cost_datapath: Datapath, cost_run: CostRun, run: object,
              pytestconfig: pytest.Config) -> None:
    """Every metric on every path of this datapath measured, each figure positive; with
    --cost-smoke, each figure's two repetitions within SMOKE_SPREAD_PCT."""
    if not cost.on_instruction_clock():
        pytest.skip("the cost bench needs the instruction clock: run it with "
                    "--vm --vm-clock=instructions (QEMU -icount; TCG)")
    why = check_missing(cost_datapath)
    if why:
        pytest.skip(why)
    errors = cost_run.measure(cost_datapath, run)
    assert not errors, f"{len(errors)} run(s) failed:\n" + "\n".join(errors)
    mine = {k: v for k, v in cost_run.figures.items() if k[0] == cost_datapath.name}
    paths = ("child",) if cost_datapath.reference else cost.PATHS
    assert {(p, m.what) for p in paths for m in cost_run.metrics} == \
        {(p, w) for _, p, w in mine}, "a metric or path yielded no figure"
    for key, values in mine.items():
        assert len(values) == cost_run.reps and min(values) > 0, f"{key}: {values}"
    baseline = pytestconfig.getoption("--bench-baseline")
    if baseline:      # the gate: this datapath against itself in a saved run
        compared, bad = cost_run.against(baseline, cost_datapath)
        assert compared, f"{cost_datapath.name}: no figure of it on this kernel and clock " \
                         f"in the baseline {baseline}"
        assert not bad, "regressions beyond the threshold and the noise:\n" + "\n".join(
            f"{d.label()}: {d.change_pct:+.2f} % ({d.verdict.text()})" for d in bad)
    if pytestconfig.getoption("--cost-smoke"):
        loose = {k: round(cost.spread_pct(v), 3) for k, v in mine.items()
                 if cost.spread_pct(v) > SMOKE_SPREAD_PCT}
        assert not loose, f"repetitions apart by more than {SMOKE_SPREAD_PCT:g} %: {loose}"


def test_cost_power(cost_power: tuple[int, int], run: object, results: object) -> None:
    """With --cost-power POOL: POOL repetitions of the veth pair's round trip as it is and as
    many with --cost-power-rules non-matching nft rules on c1's input hook, saved for
    bench/cost.py's power figures; the injected cost must be seen (B above A, no overlap)."""
    if not cost.on_instruction_clock():
        pytest.skip("the cost bench needs the instruction clock: run it with "
                    "--vm --vm-clock=instructions (QEMU -icount; TCG)")
    why = check_missing(VETH_PAIR) or missing_tool("nft")
    if why:
        pytest.skip(why)
    pool, rules = cost_power
    a, b = cost.power_pools(VETH_PAIR, run, pool, rules)
    atomic_write(results.path / f"cost-power.{os.environ.get('LINKLAB_VM_GUEST') or 'main'}.json",  # type: ignore[attr-defined]
                 json.dumps({"datapath": VETH_PAIR.name, "metric": cost.POWER_METRIC,
                             "rules": rules, "a": a, "b": b, **cost.clock_meta()}))
    assert len(a) == len(b) == pool
    assert min(b) > max(a), f"{rules} rules not seen: A {a}, B {b}"
