"""``pytest -m bench -k bpf``: veth-bpf beside the datapaths it replaces, in the same
topology shape: container <-> container (veth-bpf's own figures come from test_bench's
``test_datapath[veth-bpf]``) and container <-> remote host for all four, then the
veth-bpf vs veth comparison the report's "Which datapath?" section shows."""

from __future__ import annotations

from pathlib import Path

import pytest

from linklab.bench.baseline import filter_leg
from linklab.bench.datapaths import (
    BPF_BESIDE,
    BPF_REMOTE,
    Datapath,
    by_name,
    missing,
    open_datapath,
)
from linklab.bench.runner import Bench
from linklab.capabilities import missing_tool
from linklab.report.which import evidence

pytestmark = pytest.mark.bench
SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"
BESIDE = by_name(SCENARIOS, BPF_BESIDE)
REMOTE = by_name(SCENARIOS, BPF_REMOTE, path="remote")


def measure(dp: Datapath, bench: Bench, run: object) -> None:
    for tool in ("iperf3", "sockperf"):
        if why := missing_tool(tool):
            pytest.skip(why)
    if why := missing(dp):
        pytest.skip(why)
    with open_datapath(dp, run) as ep:
        errors = bench.run_datapath(dp, ep)
    assert not errors, f"{len(errors)} measurement(s) failed:\n" + "\n".join(errors)
    thr = [r["value"] for r in bench.results.rows("bench") if r["datapath"] == dp.kind and
           r["flag"] == dp.flag and r["metric"] == "throughput_bps" and r["value"]]
    assert thr and min(thr) > 0, f"{dp.name}: no positive TCP throughput measured"


@pytest.mark.parametrize("dp", BESIDE, ids=[d.name for d in BESIDE])
def test_bpf_beside(request: pytest.FixtureRequest, dp: Datapath, bench: Bench,
                    run: object) -> None:
    if any(i.name == f"test_datapath[{dp.name}]" for i in request.session.items):
        pytest.skip(f"{dp.name} is measured by test_datapath[{dp.name}] in this session")
    measure(dp, bench, run)


@pytest.mark.parametrize("dp", REMOTE, ids=[d.name for d in REMOTE])
def test_bpf_remote(dp: Datapath, bench: Bench, run: object) -> None:
    measure(dp, bench, run)


def test_bpf_versus_veth(bench: Bench) -> None:
    """Print veth-bpf against veth (median, 95 % CI, change), as the report states it."""
    rows = filter_leg(bench.results.rows("bench"), bench.kernel, bench.virt)
    found = [e for e in evidence(rows, [], (bench.kernel, bench.virt))
             if e.claim == 2 and "veth-bpf vs veth" in e.measure]
    with open("/proc/loadavg") as fh:
        bench.progress(f"bpf: veth-bpf vs veth (load average {fh.read().split()[:3]})")
    for e in found:
        bench.progress(f"  {e.measure}: {e.verdict}: {e.detail}")
    measured = [e for e in found if e.verdict != "not measured"]
    if not measured:   # the datapath this compares could not be built here: say why
        bpf = next((d for d in (*BESIDE, *REMOTE) if d.kind == "veth-bpf"), None)
        if bpf is not None and (why := missing(bpf)):
            pytest.skip(why)
    assert measured, "no veth-bpf and veth figures in this run: select them with -k bpf"
