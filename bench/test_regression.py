"""The baseline comparison catches a degraded datapath: a short run on the veth-pair
reference, then the same run with a tc token-bucket rate limit (tbf; netem is not available
on every kernel) on the client's interface, compared through saved results directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from linklab import results as store
from linklab.bench.baseline import against_baseline, format_deltas
from linklab.bench.compare import Threshold
from linklab.bench.datapaths import VETH_PAIR, open_datapath
from linklab.bench.measure import MATRIX, Params
from linklab.bench.runner import Bench, Settings
from linklab.capabilities import missing_tool
from linklab.cmd import cmd

pytestmark = pytest.mark.bench

RATE = "100mbit"       # far below what a veth pair carries on any machine we run on
REPS = 5               # t(4) = 2.78: a busy machine's baseline CI stays well above RATE


def short_run(rd: store.RunDir, run: object, progress: object, ep: object) -> None:
    settings = Settings(Params(duration_s=1, omit_s=0.25, latency_s=1), reps=REPS, warmup=0,
                        specs=tuple(s for s in MATRIX if s.name == "tcp-forward-x1"))
    bench = Bench(rd, run, settings, progress)  # type: ignore[arg-type]
    assert bench.run_datapath(VETH_PAIR, ep) == []  # type: ignore[arg-type]


def test_rate_limited_datapath_is_a_regression(run: object, tmp_path: Path,
                                               bench_progress: object) -> None:
    for tool in ("iperf3", "tc"):
        why = missing_tool(tool)
        if why:
            pytest.skip(why)
    base, degraded = (store.RunDir.create(tmp_path, name) for name in ("base", "degraded"))
    with open_datapath(VETH_PAIR, run) as ep:
        short_run(base, run, bench_progress, ep)
        cmd(["tc", "qdisc", "add", "dev", ep.ifnames["client"], "root", "tbf", "rate", RATE,
             "burst", "64kb", "latency", "20ms"], ns=ep.client)
        short_run(degraded, run, bench_progress, ep)
    kernel, virt = store.kernel_release(), store.virtualisation()
    rule = [Threshold("throughput", 5)]

    report = against_baseline(degraded.path, base.path, rule, kernel, virt)
    for line in format_deltas(report.deltas):
        bench_progress(f"  degraded vs baseline: {line}")  # type: ignore[operator]
    flagged = [d for d in report.regressions if d.metric == "throughput_bps"]
    assert flagged, f"a {RATE} token bucket was not flagged as a throughput regression"
    assert flagged[0].change_pct < -5

    # the other way round it is an improvement, never a regression
    reverse = against_baseline(base.path, degraded.path, rule, kernel, virt)
    assert reverse.deltas and not reverse.regressions
