"""pytest ``--vm``: run the selected tests inside a QEMU guest on a distro kernel.

The host session collects as usual, then boots one guest (``linklab.vm.run``) with
``--vm-cpus`` vCPUs that runs ``<venv python> -m pytest -n <vCPUs> --dist loadgroup <the
selected node ids> --junitxml=...`` in the same directory (pytest-xdist workers in the guest;
a scenario's cells stay together on one worker through their ``xdist_group`` mark), streams
its output, and replays the guest's JUnit results as this session's reports, each
labelled with the guest kernel release and virtualisation (user properties ``kernel`` and
``virt``, so the host's own ``--junitxml`` carries them too). The guest's JUnit file stays
in ``results/<run-id>/junit-vm-<release>.xml``; the guest writes its result rows into the
same run directory (it inherits ``LINKLAB_RUN_ID``).

Every test record, on the host or in the guest, carries the ``kernel`` and ``virt`` user
properties. The leg's phases (host start, boot, guest import, collection, cells, guest end,
replay) are written to ``results/<run-id>/vm-leg-<release>.json``: the guest's main pytest
process records its own, the host adds boot, replay and the totals. Hooks:
``pytest_addoption``, ``pytest_configure``, ``pytest_runtest_setup``, ``pytest_runtestloop``
(host); ``pytest_collection_finish``, ``pytest_xdist_node_collection_finished``,
``pytest_sessionfinish``, ``pytest_unconfigure`` (guest, phases).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import BinaryIO

import pytest
from _pytest.junitxml import mangle_test_address
from _pytest.reports import TestReport

from linklab import vm
from linklab.cmd import proc_starttime


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("linklab-vm", "linklab VM leg (virtme-ng / QEMU)")
    group.addoption("--vm", action="store_true",
                    help="run the selected tests in a QEMU guest on a distro kernel "
                         "(default: newest with ipvlan)")
    group.addoption("--vm-kernel", metavar="PATH|RELEASE",
                    help="kernel image or release (prefix such as 6.1) for --vm; implies --vm")
    group.addoption("--vm-timeout", type=float, default=1800, metavar="S",
                    help="stop the guest after S seconds, boot included (default: 1800)")
    group.addoption("--vm-guests", type=int, default=vm.DEFAULT_GUESTS, metavar="N",
                    help="split the selection across N guests booted side by side, a "
                         "scenario's cells kept together (default: %(default)s, one per host "
                         "core)")
    group.addoption("--vm-clock", choices=vm.CLOCKS, default="wall",
                    help="the guests' clock: wall, or instructions (TCG with QEMU -icount: "
                         "1 ns per guest instruction, one vCPU per guest; the cost bench)")
    group.addoption("--vm-cpus", type=int, default=1, metavar="N",
                    help="vCPUs per guest; N > 1 also runs its share on N pytest-xdist "
                         "workers in that guest (default: %(default)s)")


GUEST_ARGS_KEY = pytest.StashKey[list[str]]()   # options handed on to the guests' pytest


def vm_requested(config: pytest.Config) -> bool:
    return bool(config.getoption("vm") or config.getoption("vm_kernel"))


def pytest_configure(config: pytest.Config) -> None:
    if (path := os.environ.pop(PHASES_ENV, None)) and os.environ.get("LINKLAB_IN_VM") \
            and not hasattr(config, "workerinput"):
        config.stash[PHASES_KEY] = GuestPhases(path)  # (popped: not for nested sessions)
    if not vm_requested(config):
        return
    if os.environ.get("LINKLAB_IN_VM"):
        raise pytest.UsageError("--vm given inside the linklab VM guest")
    if getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--vm runs the selection in one guest: drop -n/--numprocesses "
                                "(--vm-cpus N runs N workers in the guest)")
    for opt in ("vm_cpus", "vm_guests"):
        if config.getoption(opt) < 1:
            raise pytest.UsageError(f"--{opt.replace('_', '-')} {config.getoption(opt)}: "
                                    "must be at least 1")
    try:
        vm.check_clock(config.getoption("vm_clock"), config.getoption("vm_cpus"), None)
    except vm.VMError as exc:
        raise pytest.UsageError(f"--vm-clock {config.getoption('vm_clock')}: {exc}") from None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Label every test record (JUnit user properties) with kernel and virtualisation."""
    item.user_properties.extend(_labels(item.config))


def _labels(config: pytest.Config) -> list[tuple[str, object]]:
    labels = getattr(config, "_linklab_vm_labels", None)
    if labels is None:
        from linklab.results import kernel_release, virtualisation

        labels = [("kernel", kernel_release()), ("virt", virtualisation())]
        config._linklab_vm_labels = labels  # type: ignore[attr-defined]
    return labels


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    config = session.config
    if not vm_requested(config) or config.option.collectonly or session.testsfailed:
        return None  # the default loop reports collection errors / --collect-only
    items = session.items
    if not items:
        return True
    try:
        kernel = vm.find_kernel(config.getoption("vm_kernel"))
    except vm.VMError as exc:
        raise pytest.UsageError(str(exc)) from None
    run_id = os.environ.get("LINKLAB_RUN_ID")
    if not run_id:
        from linklab.results import new_run_id

        run_id = os.environ["LINKLAB_RUN_ID"] = new_run_id("vm")
    try:  # linklab.pytest.plugin's option; the guest must write to the same place
        results_root = Path(config.getoption("--results-dir")).resolve()
        results_args = [f"--results-dir={results_root}"]
    except ValueError:
        results_root, results_args = vm.REPO / "results", []
    # the guest sees the host's files read-only at the same paths: hand it the same scenarios
    results_args += [f"--scenarios={Path(p).resolve()}" for p in config.getoption("--scenarios")]
    if config.getoption("--dhcp-matrix"):
        results_args.append(f"--dhcp-matrix={Path(config.getoption('--dhcp-matrix')).resolve()}")
    # other plugins' options the guest session needs (e.g. --cost-*: linklab.pytest.cost)
    results_args += config.stash.get(GUEST_ARGS_KEY, [])
    # a one-vCPU guest idles through every DHCP client's timeout: run cells ahead meanwhile
    results_args.append(f"--cells-ahead={config.getoption('--cells-ahead') or GUEST_CELLS_AHEAD}")
    rundir = results_root / run_id
    rundir.mkdir(parents=True, exist_ok=True)
    junit = rundir / f"junit-vm-{kernel.release}.xml"
    junit.unlink(missing_ok=True)
    phases = rundir / f"vm-leg-{kernel.release}.json"
    phases.unlink(missing_ok=True)
    cpus = config.getoption("vm_cpus")
    weights = item_weights(items, previous_durations(results_root, kernel.release, rundir))
    shards = shard(items, config.getoption("vm_guests"), weights)
    guests = [Guest(i, len(shards), part, rundir, kernel.release, cpus) for i, part in
              enumerate(shards)]
    verbose, exitfirst = config.option.verbose - 1, config.option.maxfail == 1
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        split = " + ".join(str(len(g.items)) for g in guests)
        reporter.write_sep("=", f"linklab vm leg: {len(items)} test(s) on {kernel.release}, "
                                f"{len(guests)} guest(s) ({split}), {cpus} vCPU(s) and "
                                f"{guests[0].workers} worker(s) each")
    from linklab.ownership import Run

    host_s = process_age_s()
    load_start = os.getloadavg()[0]
    warm_bytecode([item.nodeid for item in items], results_args)
    owner = Run()
    try:
        with capman.global_and_fixture_disabled():
            run_guests(guests, kernel, owner, results_root, results_args, verbose, exitfirst,
                       config.getoption("vm_timeout"), config.getoption("vm_clock"))
    finally:
        owner.close()
        for g in guests:
            g.phases.unlink(missing_ok=True)
    replay_started = time.monotonic()
    cases: dict[str, ET.Element] = {}
    problems = {}
    for g in guests:
        found = read_junit(g.junit) if g.junit.exists() else {}
        cases |= found
        outcome = g.outcome
        assert outcome is not None
        if outcome.failure:
            problems[g.index] = (f"VM leg {g.label}{outcome.failure} on {outcome.kernel} "
                                 f"({outcome.virt}); last console lines:\n"
                                 + "\n".join(outcome.console_tail[-vm.TAIL_LINES:]))
        elif not found:
            problems[g.index] = (f"the guest pytest {g.label}exited {outcome.returncode} and "
                                 f"wrote no {g.junit}")
    merge_junit([g.junit for g in guests], junit)
    outcomes = [g.outcome for g in guests if g.outcome is not None]
    labels = [("kernel", outcomes[0].kernel), ("virt", outcomes[0].virt)]
    where = {item.nodeid: g for g in guests for item in g.items}
    for item in items:
        replay(item, cases.get(junit_key(item.nodeid)), labels,
               problems.get(where[item.nodeid].index, ""))
        if session.shouldfail or session.shouldstop:
            break
    replay_s = time.monotonic() - replay_started
    legs = [leg_phases(g.outcome, g.guest_phases, host_s, replay_s) | {"cells": len(g.items)}
            for g in guests if g.outcome is not None]
    leg = max(legs, key=lambda one: one["total_s"]) | {  # the critical path: the last guest
        "cells": len(items), "cpus": cpus, "guests": len(guests),
        "workers": guests[0].workers, "per_guest": legs,
        "failure": next((one["failure"] for one in legs if one["failure"]), None),
        "load_1min_start": load_start, "load_1min_end": os.getloadavg()[0]}
    from linklab.results import atomic_write

    atomic_write(phases, json.dumps(leg, indent=2))
    if reporter is not None:
        for one in legs if len(legs) > 1 else ():
            reporter.write_line(f"  guest {legs.index(one)}: {one['cells']} test(s), "
                                f"{phase_summary(one)}")
        reporter.write_sep("=", f"{phase_summary(leg)} (kernel {outcomes[0].kernel}, "
                                f"{outcomes[0].virt}); guest junit {junit}")
    return True


# ---- bytecode for the guests ----------------------------------------------------------------

class _ImportAll:
    """In the warm-up session: import every linklab module under pytest's assertion rewriting
    (the plugin's distribution is rewritten), so each gets its rewritten ``.pyc``."""

    @staticmethod
    def pytest_collection_finish(session: pytest.Session) -> None:
        import importlib
        import pkgutil

        import linklab

        for mod in pkgutil.walk_packages(linklab.__path__, "linklab.", onerror=lambda _n: None):
            if mod.name.endswith(".__main__"):
                continue  # running it is what importing it does
            try:
                importlib.import_module(mod.name)
            except Exception:  # noqa: BLE001 - a module that cannot load here is compiled in the guest
                pass


def warm_bytecode(nodeids: list[str], extra: list[str]) -> None:
    """Write the ``.pyc`` files the guests would otherwise compile under TCG (~10 s per guest):
    collect the selection once here with bytecode writing on (``PYTHONDONTWRITEBYTECODE``
    set, as in many CI images, would leave every guest compiling every module). The guests
    share the host's files read-only, so a ``.pyc`` they compile is never kept. Best effort:
    a failure here only costs the guests time."""
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    code = ("import sys, pytest; from linklab.pytest.vm import _ImportAll; "
            "sys.exit(pytest.main(sys.argv[1:], plugins=[_ImportAll()]))")
    subprocess.run([sys.executable, "-c", code, "--collect-only", "-q", "-p",
                    "no:cacheprovider", *extra, *nodeids], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)


# ---- several guests: the selection split, run side by side, merged ------------------------

class Guest:
    """One guest of the leg: its share of the items, its files in the run directory, its
    outcome. Shard files are named ``vm-shard-*`` so nothing reads them as results."""

    def __init__(self, index: int, count: int, items: list[pytest.Item], rundir: Path,
                 release: str, cpus: int) -> None:
        self.index, self.items = index, items
        self.label = f"[guest {index}] " if count > 1 else ""
        self.prefix = f"[g{index}] ".encode() if count > 1 else b""
        self.junit = rundir / (f"vm-shard-{release}-{index}.xml" if count > 1
                               else f"junit-vm-{release}.xml")
        self.phases = rundir / f"vm-shard-{release}-{index}.json"
        self.workers = min(cpus, len(items))
        self.outcome: vm.Outcome | None = None
        self.guest_phases: dict[str, float] = {}


def group_key(item: pytest.Item) -> str:
    """Items that must share a guest: a scenario's cells (its ``xdist_group``, one topology
    per module-scoped fixture); any other test stands alone."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return f"{item.nodeid.split('::')[0]}@{mark.args[0] if mark.args else mark.kwargs}"
    return item.nodeid


def previous_durations(results_root: Path, release: str, skip: Path) -> dict[str, float]:
    """Each test's seconds in the newest earlier VM leg on ``release`` under ``results_root``
    (setup, call and teardown), or {} when there is none."""
    runs = sorted((p for p in results_root.glob(f"*/junit-vm-{release}.xml")
                   if p.parent != skip), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in runs:
        try:
            return {key: float(case.get("time", 0)) for key, case in read_junit(path).items()}
        except (ET.ParseError, OSError, ValueError):
            continue
    return {}


# Guest seconds per test under TCG when no earlier leg says better (bench/vm_leg.py on 6.12,
# one vCPU: 48 DHCP cells 215-260 s, 255 matrix cells in 13 scenarios 46 s): a DHCP cell
# starts a server and clients of its own; a matrix cell shares its scenario's topology and
# batch; an anatomy test traces a datapath's cells.
DEFAULT_WEIGHTS = (("test_dhcp.py::", 5.0), ("test_anatomy.py::", 3.0), ("", 0.2))


def item_weights(items: list[pytest.Item], durations: dict[str, float]) -> dict[str, float]:
    out = {}
    for item in items:
        known = durations.get(junit_key(item.nodeid))
        out[item.nodeid] = known if known is not None else next(
            w for prefix, w in DEFAULT_WEIGHTS if prefix in item.nodeid)
    return out


def shard(items: list[pytest.Item], n: int, weights: dict[str, float]) -> list[list[pytest.Item]]:
    """``items`` in at most ``n`` parts of about equal weight (heaviest group first onto the
    lightest part); a group stays whole and every part keeps the collection order."""
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        groups.setdefault(group_key(item), []).append(item)
    parts: list[list[pytest.Item]] = [[] for _ in range(max(1, min(n, len(groups))))]
    loads = [0.0] * len(parts)
    for members in sorted(groups.values(), key=lambda g: -sum(weights[i.nodeid] for i in g)):
        lightest = loads.index(min(loads))
        parts[lightest].extend(members)
        loads[lightest] += sum(weights[i.nodeid] for i in members)
    order = {item.nodeid: n for n, item in enumerate(items)}
    return [sorted(part, key=lambda i: order[i.nodeid]) for part in parts if part]


class _Prefixed:
    """A binary stream that prefixes every line it passes on (one guest's output among
    several); partial lines wait for their newline, a shared lock keeps lines whole."""

    def __init__(self, stream: BinaryIO, prefix: bytes, lock: threading.Lock) -> None:
        self.stream, self.prefix, self.lock, self.pending = stream, prefix, lock, b""

    def write(self, data: bytes) -> int:
        if not self.prefix:
            with self.lock:
                return self.stream.write(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        if lines:
            with self.lock:
                self.stream.write(b"".join(self.prefix + line + b"\n" for line in lines))
        return len(data)

    def flush(self) -> None:
        with self.lock:
            self.stream.flush()

    def close(self) -> None:
        if self.pending:
            with self.lock:
                self.stream.write(self.prefix + self.pending + b"\n")
                self.stream.flush()
            self.pending = b""


def run_guests(guests: list[Guest], kernel: vm.Kernel, owner: object, results_root: Path,
               results_args: list[str], verbose: int, exitfirst: bool, timeout: float,
               clock: str = "wall") -> None:
    """Boot every guest at once (one thread each), wait for all; a Ctrl-C stops them all."""
    lock, cancel = threading.Lock(), threading.Event()

    def one(g: Guest) -> None:
        out = _Prefixed(sys.stdout.buffer, g.prefix, lock)
        err = _Prefixed(sys.stderr.buffer, g.prefix, lock)
        argv = guest_argv([item.nodeid for item in g.items], g.junit, results_args, g.workers,
                          verbose=verbose, exitfirst=exitfirst)
        name = f"linklab-{owner.marker}-g{g.index}"  # type: ignore[attr-defined]
        try:
            g.outcome = vm.run(argv, kernel=kernel, cpus=g.workers, timeout=timeout,
                               rwdirs=[results_root], owner=owner, name=name,
                               env={PHASES_ENV: str(g.phases),
                                    "LINKLAB_VM_GUEST": f"g{g.index}" if len(guests) > 1 else ""},
                               out=out, err=err, cancel=cancel, clock=clock)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            g.outcome = vm.Outcome(vm.EXIT_SETUP, kernel.release, "n/a", None, 0.0, "setup",
                                   [f"{type(exc).__name__}: {exc}"])
        finally:
            out.close()
            err.close()
        g.guest_phases = read_guest_phases(g.phases)

    threads = [threading.Thread(target=one, args=(g,), name=f"linklab-vm-g{g.index}")
               for g in guests]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        cancel.set()
        for t in threads:
            t.join()
        raise


def merge_junit(parts: list[Path], into: Path) -> None:
    """One JUnit file from the guests' (a ``testsuites`` of their suites); the parts go."""
    if len(parts) == 1 and parts[0] == into:
        return
    root = ET.Element("testsuites")
    for part in parts:
        try:
            tree = ET.parse(part).getroot()
        except (OSError, ET.ParseError):
            continue
        root.extend(tree.iter("testsuite") if tree.tag == "testsuites" else [tree])
    if len(root):
        ET.ElementTree(root).write(into, encoding="utf-8", xml_declaration=True)
    for part in parts:
        part.unlink(missing_ok=True)


GUEST_CELLS_AHEAD = 3   # DHCP cells in flight per guest (linklab.pytest.ahead)


# ---- the leg's phases ----------------------------------------------------------------------

PHASES_ENV = "LINKLAB_VM_PHASES"   # the guest's main pytest writes its phases there
# (field, label) in the order they happen; together they make up total_s
PHASES = (("host_s", "host start"), ("boot_s", "boot"), ("import_s", "import"),
          ("collect_s", "collection"), ("cells_s", "cells"), ("end_s", "guest end"),
          ("guest_s", "guest (host clock)"),
          ("replay_s", "replay"))


def process_age_s() -> float:
    """Seconds since this process started (kernel start time against uptime)."""
    ticks = proc_starttime(os.getpid()) or 0
    with open("/proc/uptime") as fh:
        uptime = float(fh.read().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def read_guest_phases(path: Path) -> dict[str, float]:
    """The guest's phase durations, or {} when it wrote none (it did not get that far)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}


def leg_phases(outcome: vm.Outcome, guest: dict[str, float], host_s: float,
               replay_s: float) -> dict[str, float | str | None]:
    """Every phase of the leg in seconds; ``end_s`` is what the VM run took beyond boot and
    the guest's own phases (guest pytest teardown, poweroff, QEMU exit)."""
    boot = outcome.boot_s
    known = (boot or 0.0) + sum(guest.get(k, 0.0) for k in ("import_s", "collect_s",
                                                             "cells_s"))
    leg: dict[str, float | str | None] = {
        "kernel": outcome.kernel, "virt": outcome.virt, "failure": outcome.failure,
        "host_s": host_s, "boot_s": boot, "import_s": guest.get("import_s"),
        "collect_s": guest.get("collect_s"), "cells_s": guest.get("cells_s"),
        "end_s": outcome.total_s - known if guest else None, "replay_s": replay_s,
        "guest_s": None, "vm_s": outcome.total_s}
    if outcome.virt == vm.ICOUNT_VIRT:
        # the guest's clock counts instructions: its phases are virtual seconds, kept apart
        # (mixed with the host's they gave "guest end -234.6 s"); the host times the guest whole
        leg.update({"import_s": None, "collect_s": None, "cells_s": None, "end_s": None,
                    "guest_s": outcome.total_s - (boot or 0.0), "guest_virtual_s": guest})
    leg["total_s"] = host_s + outcome.total_s + replay_s
    return leg


def phase_summary(leg: dict) -> str:
    """``vm leg: boot 9.5s, import 2.0s, ..., total 140.2s``: the phases that were measured."""
    parts = [f"{label} {leg[key]:.1f}s" for key, label in PHASES
             if key not in ("host_s",) and isinstance(leg.get(key), (int, float))]
    return f"vm leg: {', '.join(parts)}, total {leg['total_s']:.1f}s"


class GuestPhases:
    """In the guest's main pytest process: when Python started, the plugins were loaded,
    the selection was collected (by every xdist worker) and the last cell ended."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        now = time.monotonic()
        self.started = now - process_age_s()
        self.configured = now
        self.collected: float | None = None
        self.cells_done: float | None = None

    def collection_done(self) -> None:
        self.collected = time.monotonic()

    def cells_end(self) -> None:
        self.cells_done = time.monotonic()

    def write(self) -> None:
        out = {"import_s": self.configured - self.started}
        if self.collected is not None:
            out["collect_s"] = self.collected - self.configured
            if self.cells_done is not None:
                out["cells_s"] = self.cells_done - self.collected
        self.path.write_text(json.dumps(out))


PHASES_KEY = pytest.StashKey[GuestPhases]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    if (phases := session.config.stash.get(PHASES_KEY, None)) is not None:
        phases.collection_done()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """The controller heard a worker's collection: the last one ends the collection phase."""
    config = getattr(node, "config", None)
    if config is not None and (phases := config.stash.get(PHASES_KEY, None)) is not None:
        phases.collection_done()


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    if (phases := session.config.stash.get(PHASES_KEY, None)) is not None:
        phases.cells_end()


def pytest_unconfigure(config: pytest.Config) -> None:
    if (phases := config.stash.get(PHASES_KEY, None)) is not None:
        phases.write()


def guest_argv(nodeids: list[str], junit: Path, extra: list[str], workers: int, *,
               verbose: int = 0, exitfirst: bool = False) -> list[str]:
    """The guest's pytest command: the selected node ids on ``workers`` xdist workers
    (``loadgroup``: a scenario's cells stay on one worker), results into ``junit``."""
    # --tb=no: the tracebacks travel in the JUnit file and are shown once, by the replay
    return [sys.executable, "-m", "pytest", f"--junitxml={junit}", *extra, "--tb=no", "-rfE",
            *(["-p", "xdist", "-n", str(workers), "--dist", "loadgroup"] if workers > 1 else []),
            *(["-" + "v" * verbose] if verbose > 0 else ["-q"] if verbose < 0 else []),
            *(["-x"] if exitfirst else []), *nodeids]


def junit_key(nodeid: str) -> str:
    """The ``classname.name`` pytest's junitxml writes for ``nodeid``."""
    return ".".join(mangle_test_address(nodeid))


def read_junit(path: Path) -> dict[str, ET.Element]:
    """The guest's test cases keyed by ``classname.name``."""
    cases: dict[str, ET.Element] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        cases[f"{classname}.{name}" if classname else name] = case
    return cases


def replay(item: pytest.Item, case: ET.Element | None, labels: list[tuple[str, object]],
           problem: str) -> None:
    """Report ``item`` here as the guest ran it (setup, call, teardown)."""
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    item.user_properties.extend(labels)

    def report(when: str, outcome: str, longrepr: object = None, duration: float = 0.0,
               **extra: object) -> None:
        rep = TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, outcome,
                         longrepr, when, duration=duration, user_properties=item.user_properties,
                         **extra)
        ihook.pytest_runtest_logreport(report=rep)

    duration = float(case.get("time", 0)) if case is not None else 0.0
    path, lineno = item.location[0], (item.location[1] or 0) + 1
    if case is None:
        report("setup", "passed")
        report("call", "failed", problem or "the guest did not run this test (not in its junit)")
        report("teardown", "passed")
    else:
        skipped, failure, error = (case.find("skipped"), case.find("failure"),
                                   case.find("error"))
        if skipped is not None and skipped.get("type") == "pytest.xfail":
            report("setup", "passed")
            report("call", "skipped", (path, lineno, "xfail"), duration,
                   wasxfail=skipped.get("message", ""))
            report("teardown", "passed")
        elif skipped is not None:
            message = skipped.get("message", "")
            report("setup", "skipped", (path, lineno, message.removeprefix("Skipped: ")),
                   duration)
            report("teardown", "passed")
        elif error is not None and "teardown" in error.get("message", ""):
            report("setup", "passed")
            report("call", "failed" if failure is not None else "passed",
                   _text(failure), duration)
            report("teardown", "failed", _text(error))
        elif error is not None:
            report("setup", "failed", _text(error), duration)
            report("teardown", "passed")
        elif failure is not None:
            report("setup", "passed")
            report("call", "failed", _text(failure), duration)
            report("teardown", "passed")
        else:
            report("setup", "passed")
            report("call", "passed", None, duration)
            report("teardown", "passed")
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _text(element: ET.Element | None) -> str:
    if element is None:
        return ""
    return f"[guest] {element.get('message', '')}\n{element.text or ''}".rstrip()
