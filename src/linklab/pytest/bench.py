"""pytest plugin of the benchmarks (``pytest -m bench``): options, the session ``bench``
fixture, live progress, the summary table and the baseline comparison.

Options (all ``--bench-*``): repetitions, warm-up repetitions, durations, the warm-up slice,
the UDP rate, a datapath selection, ``--bench-smoke`` (one datapath, one short repetition of
every measurement: the CI smoke), ``--bench-baseline RUN_DIR`` and ``--bench-fail-on``.
"""

from __future__ import annotations

import sys
import time
import warnings
from contextlib import nullcontext
from pathlib import Path

import pytest

from linklab import results as store
from linklab.bench.baseline import load_rows, summary_lines
from linklab.bench.compare import FailOnError, Threshold, groups, parse_fail_on
from linklab.bench.datapaths import datapaths, missing
from linklab.bench.measure import MATRIX, Params
from linklab.bench.runner import Bench, Settings
from linklab.model import ScenarioError
from linklab.pytest.plugin import results_part, scenario_paths

SMOKE_DATAPATH = "veth"


class BaselineMismatch(UserWarning):
    """The baseline was measured on another machine, kernel or virtualisation."""


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("linklab-bench", "linklab benchmarks (pytest -m bench)")
    g.addoption("--bench-reps", type=int, default=5, help="measured repetitions (default 5)")
    g.addoption("--bench-warmup", type=int, default=1,
                help="warm-up repetitions run first and discarded (default 1)")
    g.addoption("--bench-duration", type=int, default=2,
                help="iperf3 run length in whole seconds, warm-up slice included (default 2)")
    g.addoption("--bench-omit", type=float, default=0.5,
                help="seconds of iperf3 receiver intervals dropped as warm-up (default 0.5)")
    g.addoption("--bench-latency-duration", type=int, default=1,
                help="sockperf ping-pong run length in seconds (default 1)")
    g.addoption("--bench-udp-rate", default="1G",
                help="iperf3 UDP offered rate, iperf3 -b syntax (default 1G)")
    g.addoption("--bench-families", default="v4,v6",
                help="address families to measure, v4, v6 or v4,v6 (default v4,v6)")
    g.addoption("--bench-seed", type=int, default=None,
                help="seed of the shuffled datapath order of each repetition (default: "
                     "random; recorded in meta.json either way)")
    g.addoption("--bench-datapaths", default="",
                help="comma-separated datapath names to measure (default: all this kernel "
                     "supports), e.g. loopback,veth-pair,bridge")
    g.addoption("--bench-smoke", action="store_true",
                help=f"CI smoke: datapath {SMOKE_DATAPATH!r} only, 1 repetition of 1 s, no "
                     "warm-up repetition")
    g.addoption("--bench-baseline", default=None, metavar="RUN_DIR",
                help="a saved results/<run-id>/ to compare with (per-metric deltas)")
    g.addoption("--bench-fail-on", default="", metavar="METRIC[@KIND]:PCT%,...",
                help="with --bench-baseline: fail when a metric is worse by more than PCT "
                     "and outside the noise, e.g. throughput:5%%,latency_p99:10%%; @KIND "
                     "for one row kind (virtualisation), e.g. *@tcg-icount:2%%")


SETTINGS_KEY = pytest.StashKey[Settings]()
THRESHOLDS_KEY = pytest.StashKey[list[Threshold]]()


def families_from(config: pytest.Config) -> tuple[str, ...]:
    fams = tuple(f.strip() for f in config.getoption("--bench-families").split(",") if f.strip())
    bad = [f for f in fams if f not in ("v4", "v6")]
    if bad or not fams:
        raise pytest.UsageError(f"--bench-families: {', '.join(bad) or 'nothing'} given; "
                                "use v4, v6 or v4,v6")
    return fams


def settings_from(config: pytest.Config) -> Settings:
    opt = config.getoption
    specs = tuple(x for x in MATRIX if x.family in families_from(config))
    if opt("--bench-smoke"):
        s = Settings(Params(duration_s=1, omit_s=0.25, latency_s=1,
                            udp_rate=opt("--bench-udp-rate")), reps=1, warmup=0, specs=specs)
    else:
        s = Settings(Params(duration_s=opt("--bench-duration"), omit_s=opt("--bench-omit"),
                            latency_s=opt("--bench-latency-duration"),
                            udp_rate=opt("--bench-udp-rate")),
                     reps=opt("--bench-reps"), warmup=opt("--bench-warmup"), specs=specs)
    try:
        s.check()
    except ValueError as exc:
        raise pytest.UsageError(f"--bench-*: {exc}") from None
    return s


def selected_datapaths(config: pytest.Config) -> list[str]:
    if config.getoption("--bench-smoke"):
        return [SMOKE_DATAPATH]
    return [n.strip() for n in config.getoption("--bench-datapaths").split(",") if n.strip()]


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SETTINGS_KEY] = settings_from(config)
    try:
        config.stash[THRESHOLDS_KEY] = parse_fail_on(config.getoption("--bench-fail-on"))
    except FailOnError as exc:
        raise pytest.UsageError(str(exc)) from None
    wanted = selected_datapaths(config)
    if wanted and config.getoption("--bench-datapaths"):
        try:
            names = {d.name for d in datapaths(scenario_paths(config))}
        except ScenarioError as exc:
            raise pytest.UsageError(str(exc)) from None
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise pytest.UsageError(f"--bench-datapaths: unknown datapath(s) "
                                    f"{', '.join(unknown)}; known: {', '.join(sorted(names))}")
    base = config.getoption("--bench-baseline")
    if config.stash[THRESHOLDS_KEY] and not base:
        raise pytest.UsageError("--bench-fail-on needs --bench-baseline RUN_DIR")
    if base is not None:
        path = Path(base)
        if not path.is_dir():
            raise pytest.UsageError(f"--bench-baseline: {base}: no such results directory")
        rows = load_rows(path)
        if not rows:
            raise pytest.UsageError(f"--bench-baseline: {base}: holds no bench table "
                                    "(bench*.jsonl, bench.parquet or bench.csv)")
        # a misspelt metric or row kind would otherwise gate nothing, silently
        metrics = sorted({str(r["metric"]) for r in rows})
        kinds = sorted({str(r.get("virt")) for r in rows})
        figures = list(groups(rows))
        idle = [t.metric if t.virt is None else f"{t.metric}@{t.virt}"
                for t in config.stash[THRESHOLDS_KEY] if not any(t.applies(k) for k in figures)]
        if idle:
            raise pytest.UsageError(f"--bench-fail-on: {', '.join(idle)} matches no metric of "
                                    f"the baseline {base} (it has: {', '.join(metrics)}; "
                                    f"row kinds: {', '.join(kinds)})")


class Progress:
    """Writes a line to the terminal even under output capture (and in xdist workers)."""

    def __init__(self, config: pytest.Config) -> None:
        self.tr = config.pluginmanager.get_plugin("terminalreporter")
        self.capman = config.pluginmanager.get_plugin("capturemanager")

    def __call__(self, text: str) -> None:
        if self.tr is None:
            print(text, file=sys.__stderr__, flush=True)
            return
        suspend = self.capman.global_and_fixture_disabled() if self.capman else nullcontext()
        with suspend:
            if self.tr._tw.width_of_current_line:   # after pytest's progress dots
                self.tr._tw.line()
            self.tr.write_line(text)


@pytest.fixture(scope="session")
def bench_settings(pytestconfig: pytest.Config) -> Settings:
    """session: the run's repetitions, durations and matrix (from the --bench-* options)."""
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def bench_progress(pytestconfig: pytest.Config) -> Progress:
    """session: the live progress printer."""
    return Progress(pytestconfig)


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config, results: store.RunDir, run: object,
          bench_settings: Settings, bench_progress: Progress) -> Bench:
    """session: the benchmark run writing to this pytest run's results directory
    (depends on the linklab plugin's ``results`` and ``run``)."""
    b = Bench(results, run, bench_settings, bench_progress, part=results_part(pytestconfig),
              seed=pytestconfig.getoption("--bench-seed"))
    pytestconfig.stash[BENCH_KEY] = b
    n = len([d for d in pytestconfig.stash.get(DATAPATHS_KEY, ()) if missing(d) is None]) or 1
    bench_progress(f"bench: {n} datapath(s) x {len(bench_settings.specs)} measurements x "
                   f"({bench_settings.warmup} warm-up + {bench_settings.reps}) repetitions, "
                   f"about {bench_settings.estimate_s(n) / 60:.1f} min; each repetition a "
                   f"block of every datapath in a shuffled order (seed {b.seed}); server on "
                   f"CPU {b.layout.server_cpu}, client on CPU {b.layout.client_cpu}; results "
                   f"in {results.path}")
    return b


BENCH_KEY = pytest.StashKey[Bench]()
DATAPATHS_KEY = pytest.StashKey[list]()


def warn_mismatch(messages: list[str]) -> None:
    for m in messages:
        warnings.warn(BaselineMismatch(f"baseline: {m}; figures may differ for that reason"),
                      stacklevel=2)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    bench = config.stash.get(BENCH_KEY, None)
    if bench is None or bench.started is None:
        return
    tr = terminalreporter
    rows = [r for r in bench.results.rows("bench")
            if r.get("kernel") == bench.kernel and r.get("virt") == bench.virt]
    tr.section("linklab bench")
    for line in summary_lines(rows):
        tr.write_line(line)
    total = bench.meta.get("wall_s", time.time() - bench.started)
    tr.write_line(f"bench: {bench.measurements} measurements ({bench.seconds:.0f} s in the "
                  f"tools) on {len(bench.meta['datapaths'])} datapath(s); matrix wall time "
                  f"{total:.0f} s ({total / 60:.1f} min); results: {bench.results.path}")
    if bench.disturbed:
        tr.write_line(f"bench: {bench.disturbed} of {bench.measurements} measurements were "
                      "taken while the machine was disturbed (steal >= 5 % or load average > "
                      "1.5 x CPUs); the report flags them")
