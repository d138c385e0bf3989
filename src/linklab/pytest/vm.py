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
import time
import xml.etree.ElementTree as ET
from pathlib import Path

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
    group.addoption("--vm-cpus", type=int, default=vm.DEFAULT_CPUS, metavar="N",
                    help="guest vCPUs (one QEMU thread each); N > 1 also runs the selection "
                         "on N pytest-xdist workers in the guest (default: %(default)s)")


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
    if config.getoption("vm_cpus") < 1:
        raise pytest.UsageError(f"--vm-cpus {config.getoption('vm_cpus')}: must be at least 1")


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
    rundir = results_root / run_id
    rundir.mkdir(parents=True, exist_ok=True)
    junit = rundir / f"junit-vm-{kernel.release}.xml"
    junit.unlink(missing_ok=True)
    phases = rundir / f"vm-leg-{kernel.release}.json"
    phases.unlink(missing_ok=True)
    cpus = config.getoption("vm_cpus")
    workers = min(cpus, len(items))
    # verbose - 1: the replay here already lists each test id
    argv = guest_argv([item.nodeid for item in items], junit, results_args, workers,
                      verbose=config.option.verbose - 1, exitfirst=config.option.maxfail == 1)
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", f"linklab vm leg: {len(items)} test(s) on {kernel.release}, "
                                f"{cpus} vCPU(s), {workers} worker(s)")
    from linklab.ownership import Run

    host_s = process_age_s()
    load_start = os.getloadavg()[0]
    owner = Run()
    try:
        with capman.global_and_fixture_disabled():
            outcome = vm.run(argv, kernel=kernel, cpus=cpus,
                             timeout=config.getoption("vm_timeout"), rwdirs=[results_root],
                             owner=owner, env={PHASES_ENV: str(phases)})
    finally:
        owner.close()
    replay_started = time.monotonic()
    labels = [("kernel", outcome.kernel), ("virt", outcome.virt)]
    cases = read_junit(junit) if junit.exists() else {}
    problem = ""
    if outcome.failure:
        problem = (f"VM leg {outcome.failure} on {outcome.kernel} ({outcome.virt}); last "
                   "console lines:\n" + "\n".join(outcome.console_tail[-vm.TAIL_LINES:]))
    elif not cases:
        problem = f"the guest pytest exited {outcome.returncode} and wrote no {junit}"
    for item in items:
        replay(item, cases.get(junit_key(item.nodeid)), labels, problem)
        if session.shouldfail or session.shouldstop:
            break
    leg = leg_phases(outcome, read_guest_phases(phases), host_s,
                     time.monotonic() - replay_started)
    leg |= {"cells": len(items), "cpus": cpus, "workers": workers,
            "load_1min_start": load_start, "load_1min_end": os.getloadavg()[0]}
    from linklab.results import atomic_write

    atomic_write(phases, json.dumps(leg, indent=2))
    if reporter is not None:
        reporter.write_sep("=", f"{phase_summary(leg)} (kernel {outcome.kernel}, "
                                f"{outcome.virt}); guest junit {junit}")
    return True


# ---- the leg's phases ----------------------------------------------------------------------

PHASES_ENV = "LINKLAB_VM_PHASES"   # the guest's main pytest writes its phases there
# (field, label) in the order they happen; together they make up total_s
PHASES = (("host_s", "host start"), ("boot_s", "boot"), ("import_s", "import"),
          ("collect_s", "collection"), ("cells_s", "cells"), ("end_s", "guest end"),
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
        "vm_s": outcome.total_s}
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
