"""pytest plugin of the cost bench (``pytest --vm --vm-clock=instructions -m cost``): options,
one test per datapath (``cost_datapath``) and the figures' summary.

The figures are instruction counts only on the instruction clock (``linklab.vm``'s
``--clock instructions``); elsewhere a cost test skips, saying so. Rows go to the bench table
(labelled ``virt = tcg-icount``), so ``--bench-baseline`` gates them like any bench figure.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
import warnings
from pathlib import Path

import pytest

from linklab import bpf
from linklab.bench import cost
from linklab.bench.baseline import load_rows
from linklab.bench.compare import Delta, Threshold, compare
from linklab.bench.datapaths import Datapath, datapaths, missing
from linklab.bpf import BpfError
from linklab.cmd import CmdError, StillAlive
from linklab.format import ScenarioError
from linklab.pytest.bench import THRESHOLDS_KEY
from linklab.pytest.plugin import results_part, scenario_paths
from linklab.pytest.vm import GUEST_ARGS_KEY, vm_requested
from linklab.results import kernel_release, virtualisation

# the baseline gate of instruction rows without --bench-fail-on: a figure worse by more than
# 1 % beyond the noise fails (the repetitions agree within ~0.1 %: a 2 % regression is caught)
GATE = Threshold("*", 1.0, virt=cost.ICOUNT_VIRT)
SMOKE_DATAPATHS = ("veth-pair", "bridge")
SMOKE_SPREAD_PCT = 1.0       # `make test`'s smoke: its two repetitions agree within this
DEFAULT_POWER_RULES = 4      # ~150 instructions each on a veth pair's ~27.2 k round trip: ~2.2 %


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("linklab-cost", "linklab cost bench on the instruction clock")
    g.addoption("--cost-reps", type=int, default=3, help="measured repetitions (default 3)")
    g.addoption("--cost-warmup", type=int, default=1,
                help="warm-up repetitions run first and discarded (default 1)")
    g.addoption("--cost-datapaths", default="",
                help="comma-separated datapath names (default: every one the kernel builds)")
    g.addoption("--cost-smoke", action="store_true",
                help=f"CI smoke: {' and '.join(SMOKE_DATAPATHS)}, 2 repetitions of the "
                     f"{' and '.join(cost.SMOKE_METRICS)} metrics, each figure's two "
                     f"repetitions within {SMOKE_SPREAD_PCT:g} %")
    g.addoption("--cost-power", type=int, default=0, metavar="POOL",
                help="also run the power experiment: POOL round-trip repetitions of the veth "
                     "pair as it is and as many with a known injected cost (bench/cost.py)")
    g.addoption("--cost-power-rules", type=int, default=DEFAULT_POWER_RULES, metavar="N",
                help="the injected cost: N non-matching nft rules on c1's input hook "
                     "(default %(default)s, about 2 %% of a veth pair's round trip)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cost: instructions per unit of work of each datapath "
                                       "(needs the instruction clock: --vm-clock=instructions)")
    for opt in ("--cost-reps", "--cost-warmup"):
        if config.getoption(opt) < (1 if opt == "--cost-reps" else 0):
            raise pytest.UsageError(f"{opt} {config.getoption(opt)}: too small")
    if vm_requested(config) and not os.environ.get("LINKLAB_IN_VM"):
        config.stash[GUEST_ARGS_KEY] = config.stash.get(GUEST_ARGS_KEY, []) + guest_args(config)
        if config.getoption("--vm-clock", "wall") == "instructions":
            prebuild()


def guest_args(config: pytest.Config) -> list[str]:
    """The --cost-* options as the guests' pytest must get them (OPT=VALUE form)."""
    opt = config.getoption
    return [f"--cost-reps={opt('--cost-reps')}", f"--cost-warmup={opt('--cost-warmup')}",
            *([f"--cost-datapaths={opt('--cost-datapaths')}"] if opt("--cost-datapaths") else []),
            *(["--cost-smoke"] if opt("--cost-smoke") else []),
            *([f"--cost-power={opt('--cost-power')}",
               f"--cost-power-rules={opt('--cost-power-rules')}"] if opt("--cost-power") else []),
            *([f"--bench-baseline={Path(opt('--bench-baseline')).resolve()}"]
              if opt("--bench-baseline") else []),
            *([f"--bench-fail-on={opt('--bench-fail-on')}"] if opt("--bench-fail-on") else [])]


def prebuild() -> None:
    """Compile llcost and the BPF objects on the host, before the guests boot: the guests
    see the host's cache read-only and would otherwise compile them under TCG, each its own.
    Best effort: a failure here only costs the guests time (they compile, or skip naming
    what is missing)."""
    for build in (cost.llcost.binary, bpf.objects):
        try:
            build()
        except (OSError, RuntimeError):
            pass


def chosen(config: pytest.Config) -> list[Datapath]:
    """The datapaths a cost run measures, from --scenarios and --cost-datapaths."""
    try:
        found = datapaths(scenario_paths(config))
    except ScenarioError as exc:
        raise pytest.UsageError(str(exc)) from None
    if config.getoption("--cost-smoke"):
        wanted = list(SMOKE_DATAPATHS)
    else:
        wanted = [w.strip() for w in config.getoption("--cost-datapaths").split(",")
                  if w.strip()]
    if not wanted:
        return [d for d in found if not d.name.startswith("seed-")]   # the seed recipes
    names = {d.name: d for d in found}                               # duplicate ipvlan l2/l3
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise pytest.UsageError(f"--cost-datapaths: unknown datapath(s) {', '.join(unknown)}; "
                                f"known: {', '.join(sorted(names))}")
    return [names[w] for w in wanted]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``cost_datapath`` runs once per chosen datapath (its own xdist group:
    one build, every metric and path)."""
    if "cost_datapath" not in metafunc.fixturenames:
        return
    metafunc.parametrize("cost_datapath", [
        pytest.param(d, id=d.name, marks=pytest.mark.xdist_group(f"cost-{d.name}"))
        for d in chosen(metafunc.config)])


class CostRun:
    """The session's cost figures: written as bench rows as they come, kept for the summary."""

    def __init__(self, config: pytest.Config, results: object, kernel: str, virt: str) -> None:
        self.config, self.results, self.kernel, self.virt = config, results, kernel, virt
        self.part = results_part(config)
        smoke = config.getoption("--cost-smoke")
        self.reps = 2 if smoke else config.getoption("--cost-reps")
        self.warmup = config.getoption("--cost-warmup")
        self.metrics = tuple(m for m in cost.METRICS if not smoke or m.what in cost.SMOKE_METRICS)
        self.figures: dict[tuple[str, str, str], list[float]] = {}

    def measure(self, dp: Datapath, run: object) -> list[str]:
        """Every metric on every path of ``dp`` (:func:`cost.measure_datapath`); its rows are
        written once it is done. On the instruction clock a command that timed out while the
        datapath was built or torn down is tried once more with a fresh build, said in a
        warning: an idle guest's clock jumps to its next timer, and a tool waiting on the host
        (9p) has outlived even a stretched timeout there, about once in 30 builds of the BPF
        datapaths. The figures of the attempt that failed are discarded."""
        for attempt in (1, 2):
            try:
                errors, rows, figures = self.attempt(dp, run)
            except (CmdError, BpfError, StillAlive) as exc:
                timed_out = isinstance(exc, StillAlive) or "timed out" in str(exc)
                if attempt == 2 or not timed_out or not cost.on_instruction_clock():
                    raise
                warnings.warn(CostRetry(f"{dp.name}: built once more after: {exc}"),
                              stacklevel=1)
                continue
            for row in rows:
                self.results.append("bench", row, part=self.part)  # type: ignore[attr-defined]
            for key, values in figures.items():
                self.figures.setdefault(key, []).extend(values)
            return errors
        raise AssertionError("unreachable")

    def attempt(self, dp: Datapath, run: object
                ) -> tuple[list[str], list[dict], dict[tuple[str, str, str], list[float]]]:
        """One build and measurement of ``dp``: (errors, its rows, its figures)."""
        rows: list[dict] = []
        figures: dict[tuple[str, str, str], list[float]] = {}

        def sink(fig: cost.Figure | None, metric: cost.Metric, path: str, rep: int,
                 error: str | None) -> None:
            rows.append(cost.row(dp, metric, path, rep, fig, error, self.kernel, self.virt))
            if fig is not None:
                figures.setdefault((dp.name, path, metric.what), []).append(fig.value)
        errors = cost.measure_datapath(dp, run, reps=self.reps, warmup=self.warmup,
                                       metrics=self.metrics, sink=sink)
        return errors, rows, figures


class CostRetry(UserWarning):
    """A datapath was built once more after a command timed out on the instruction clock."""

    def mine(self, rows: list[dict], dp: Datapath) -> list[dict]:
        """``rows``' instruction rows of ``dp`` on this kernel (both paths)."""
        flags = {dp.flag, "+".join(p for p in (dp.flag, cost.FROM_REMOTE) if p)}
        return [r for r in rows if r.get("virt") == self.virt and r.get("kernel") == self.kernel
                and r.get("datapath") == dp.kind and (r.get("mode") or "") == dp.mode
                and (r.get("flag") or "") in flags]

    def against(self, baseline: str, dp: Datapath) -> tuple[list[Delta], list[Delta]]:
        """(compared, regressed): ``dp``'s figures against the same datapath, kernel and clock
        in the saved run ``baseline`` (--bench-fail-on thresholds, else :data:`GATE`)."""
        thresholds = [t for t in self.config.stash.get(THRESHOLDS_KEY, [])
                      if t.virt in (None, self.virt)] or [GATE]
        deltas = compare(self.mine(self.results.rows("bench"), dp),  # type: ignore[attr-defined]
                         self.mine(load_rows(baseline), dp), thresholds)
        return deltas, [d for d in deltas if d.failed]


# modules the datapaths and the injected cost load (br_netfilter never: it changes bridging)
MODULES = ("veth", "bridge", "macvlan", "ipvlan", "sch_ingress", "cls_bpf", "nf_tables",
           "nft_chain_nat")
BACKLOG = 16384  # > a udp-stream run's datagrams (5000 + 500 warm-up)
SETTLE_S = 5.0   # guest seconds: idle time is skipped on this clock, so only busy work costs
TOOLS = (("tc", "-V"), ("nft", "-v"), ("ip", "-V"), ("bpftool", "version"),
         ("nsenter", "--version"))


def load_ahead() -> None:
    """On the instruction clock, load the kernel modules and start each tool once before any
    timed command: reading them over 9p leaves the vCPU idle, and with ``sleep=off`` an idle
    guest's clock jumps straight to its next timer, which may be a command's own timeout
    (``tc qdisc add ... clsact: timed out after 10s`` while sch_ingress loaded). No timeout
    here: a missing module or tool is the build's to report, naming it."""
    subprocess.run(["modprobe", "-a", "-q", *MODULES], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for tool in TOOLS:
        if shutil.which(tool[0]):
            subprocess.run(list(tool), check=False, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    # the UDP stream's sender runs as SCHED_FIFO; where the kernel defers the receive softirq
    # to ksoftirqd (6.1 on loopback), the whole burst waits in the CPU's backlog: make room
    # for it (the guest's own setting; the default 1000 dropped 3107 of 5000 datagrams there)
    Path("/proc/sys/net/core/netdev_max_backlog").write_text(str(BACKLOG))
    # then let the boot's own kernel work run out before anything is timed: the first datapath
    # of a fresh guest read 10.9 % high per round trip for a whole repetition without it
    time.sleep(SETTLE_S)


@pytest.fixture(scope="session")
def cost_run(pytestconfig: pytest.Config, results: object) -> CostRun:
    """session: where this run's cost figures go (depends on the linklab plugin's
    ``results``); meta.json records the clock (QEMU version, icount settings). On the
    instruction clock the modules and tools are loaded first (:func:`load_ahead`)."""
    if cost.on_instruction_clock():
        load_ahead()
    results.write_meta({"cost": cost.clock_meta()})  # type: ignore[attr-defined]
    run = CostRun(pytestconfig, results, kernel_release(), virtualisation())
    pytestconfig.stash[COST_KEY] = run
    return run


COST_KEY = pytest.StashKey[CostRun]()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash.get(COST_KEY, None)
    if run is None or not run.figures:
        return
    tr = terminalreporter
    tr.section("linklab cost (instructions per unit of work)")
    for (name, path, what), values in sorted(run.figures.items()):
        mean = statistics.fmean(values)
        cv = statistics.pstdev(values) / mean * 100 if len(values) > 1 else 0.0
        tr.write_line(f"{name:24} {path:6} {what:6} {mean:12.2f}  CV {cv:.3f} %  "
                      f"(n={len(values)})")


@pytest.fixture(scope="session")
def cost_power(pytestconfig: pytest.Config) -> tuple[int, int]:
    """session: (pool, rules) of the power experiment (--cost-power, --cost-power-rules)."""
    return pytestconfig.getoption("--cost-power"), pytestconfig.getoption("--cost-power-rules")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The power experiment runs only when asked for (--cost-power POOL): deselected else."""
    if config.getoption("--cost-power"):
        return
    off = [i for i in items if "cost_power" in getattr(i, "fixturenames", ())]
    if off:
        config.hook.pytest_deselected(items=off)
        items[:] = [i for i in items if i not in off]


def check_missing(dp: Datapath) -> str | None:
    """Why this kernel or machine cannot measure ``dp``'s cost (a skip reason), or None."""
    return missing(dp) or cost.llcost.missing()
