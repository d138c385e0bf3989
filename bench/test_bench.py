"""``pytest -m bench``: throughput, latency and CPU cost of every datapath this kernel
supports, against the loopback and veth-pair references, then (with --bench-baseline) the
comparison with a saved run."""

from __future__ import annotations

import pytest

from linklab.bench.baseline import against_baseline, format_deltas
from linklab.bench.datapaths import Datapath, missing, open_datapath
from linklab.bench.runner import Bench
from linklab.capabilities import missing_tool
from linklab.pytest.bench import DATAPATHS_KEY, THRESHOLDS_KEY, warn_mismatch

pytestmark = pytest.mark.bench


def need_tools() -> None:
    for tool in ("iperf3", "sockperf"):
        why = missing_tool(tool)
        if why:
            pytest.skip(why)


@pytest.fixture(scope="session")
def bench_blocks(pytestconfig: pytest.Config, bench: Bench, run: object) -> dict[str, list[str]]:
    """session: the whole interleaved run over every selected datapath this kernel builds
    (each repetition a block in a shuffled order); error texts per datapath name. Depends
    on ``bench`` and the linklab plugin's ``run``."""
    need_tools()
    chosen = [d for d in pytestconfig.stash.get(DATAPATHS_KEY, []) if missing(d) is None]
    return bench.run_blocks(chosen, lambda dp: open_datapath(dp, run))


def test_datapath(datapath: Datapath, bench: Bench, request: pytest.FixtureRequest) -> None:
    """Every measurement of the matrix ran on this datapath and yielded figures (the
    measuring itself happens interleaved with the other datapaths in ``bench_blocks``)."""
    need_tools()
    why = missing(datapath)
    if why:
        pytest.skip(why)
    errors = request.getfixturevalue("bench_blocks").get(datapath.name)
    assert errors is not None, f"{datapath.name} was not part of the interleaved run"
    assert not errors, f"{len(errors)} measurement(s) failed:\n" + "\n".join(errors)
    mine = [r for r in bench.results.rows("bench") if r["datapath"] == datapath.kind and
            r["mode"] == datapath.mode and r["flag"] == datapath.flag]
    for family in sorted({x.family for x in bench.settings.specs}):
        thr = [r["value"] for r in mine if r["metric"] == "throughput_bps" and
               r["family"] == family]
        if family == "v6" and not thr and datapath.scenario is not None and \
                datapath.scenario.node("c1").addr(6) is None:
            continue     # a v4-only scenario
        assert thr and min(thr) > 0, f"{datapath.name}: no positive {family} TCP throughput"


def test_against_baseline(pytestconfig: pytest.Config, bench: Bench,
                          bench_blocks: dict[str, list[str]]) -> None:
    """With --bench-baseline: per-metric verdicts; fail on a --bench-fail-on threshold broken
    beyond the noise (Welch test on logs, Holm over the gated figures)."""
    baseline = pytestconfig.getoption("--bench-baseline")
    if baseline is None:
        pytest.skip("no --bench-baseline RUN_DIR given")
    thresholds = pytestconfig.stash[THRESHOLDS_KEY]
    report = against_baseline(bench.results.path, baseline, thresholds, bench.kernel, bench.virt)
    for w in report.warnings:
        bench.progress(f"bench baseline WARNING: {w}")
    warn_mismatch(report.warnings)
    bench.progress(f"bench: {len(report.deltas)} figures compared with {baseline}")
    for line in format_deltas(report.deltas):
        bench.progress("  " + line)
    assert report.deltas or report.warnings, "no figure of this run is in the baseline"
    bad = report.regressions
    assert not bad, "regressions beyond --bench-fail-on and the noise:\n" + "\n".join(
        f"{d.label()}: {d.change_pct:+.1f} % "
        f"({', '.join(f'{t.metric}:{t.pct:g}%' for t in d.failed)})"
        for d in bad)
