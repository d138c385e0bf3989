"""``pytest -m bench``: throughput, latency and CPU cost of every datapath this kernel
supports, against the loopback and veth-pair references, then (with --bench-baseline) the
comparison with a saved run."""

from __future__ import annotations

import pytest

from linklab.bench.datapaths import Datapath, missing, open_datapath
from linklab.bench.runner import Bench, against_baseline, format_deltas
from linklab.pytest.bench import THRESHOLDS_KEY, warn_mismatch
from linklab.capabilities import missing_tool

pytestmark = pytest.mark.bench


def need_tools() -> None:
    for tool in ("iperf3", "sockperf"):
        why = missing_tool(tool)
        if why:
            pytest.skip(why)


def test_datapath(datapath: Datapath, bench: Bench, run: object) -> None:
    """Every measurement of the matrix runs and yields figures (error rows fail the case,
    after the whole matrix of this datapath has run)."""
    need_tools()
    why = missing(datapath)
    if why:
        pytest.skip(why)
    with open_datapath(datapath, run) as ep:
        errors = bench.run_datapath(datapath, ep)
    assert not errors, f"{len(errors)} measurement(s) failed:\n" + "\n".join(errors)
    mine = [r for r in bench.results.rows("bench") if r["datapath"] == datapath.kind and
            r["mode"] == datapath.mode and r["flag"] == datapath.flag]
    thr = [r["value"] for r in mine if r["metric"] == "throughput_bps"]
    assert thr and min(thr) > 0, f"{datapath.name}: no positive TCP throughput measured"


def test_against_baseline(pytestconfig: pytest.Config, bench: Bench) -> None:
    """With --bench-baseline: per-metric deltas; fail on a --bench-fail-on threshold broken
    beyond the noise (confidence intervals apart)."""
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
        f"{d.label()}: {d.change_pct:+.1f} % ({', '.join(f'{t.metric}:{t.pct:g}%' for t in d.failed)})"
        for d in bad)
