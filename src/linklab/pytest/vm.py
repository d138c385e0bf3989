"""pytest ``--vm``: run the selected tests inside QEMU guests on a distro kernel.

The host session collects as usual, splits the selection across ``--vm-guests`` guests
(:mod:`linklab.vmleg.shard`) booted side by side (:mod:`linklab.vmleg.guests`), each running
``<venv python> -m pytest [-n <vCPUs> --dist loadgroup] <its node ids> --junitxml=...`` in the
same directory, streams their output, and replays the guests' JUnit results as this session's
reports (:mod:`linklab.vmleg.junit`), each labelled with the guest kernel release and
virtualisation (user properties ``kernel`` and ``virt``, so the host's own ``--junitxml``
carries them too). The merged JUnit file stays in ``results/<run-id>/junit-vm-<release>.xml``;
the guests write their result rows into the same run directory (they inherit
``LINKLAB_RUN_ID``).

The leg's phases (host start, boot, guest import, collection, cells, guest end, replay) are
written to ``results/<run-id>/vm-leg-<release>.json`` (:mod:`linklab.vmleg.phases`): the
guest's main pytest process records its own, the host adds boot, replay and the totals.

Hooks: ``pytest_addoption``, ``pytest_configure``, ``pytest_runtest_setup``,
``pytest_runtestloop`` (host); ``pytest_collection_finish``,
``pytest_xdist_node_collection_finished``, ``pytest_sessionfinish``, ``pytest_unconfigure``
(guest, phases). The names other modules import from here are re-exported below.
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from linklab import vm
from linklab.ownership import Run
from linklab.results import atomic_write, kernel_release, virtualisation
from linklab.suite import RUN_ID_ENV, new_run_id
from linklab.vmleg.bytecode import warm_bytecode
from linklab.vmleg.guests import run_guests
from linklab.vmleg.junit import junit_key, merge_junit, read_junit, replay
from linklab.vmleg.phases import (
    PHASES,
    PHASES_ENV,
    PHASES_KEY,
    GuestPhases,
    leg_phases,
    phase_summary,
    process_age_s,
)
from linklab.vmleg.shard import Guest, make_guests

# imported from here by linklab.pytest.cost, bench/vm_leg.py and tests/unit/test_cost.py
__all__ = ["GUEST_ARGS_KEY", "PHASES", "leg_phases", "phase_summary", "vm_requested"]

GUEST_ARGS_KEY = pytest.StashKey[list[str]]()   # options handed on to the guests' pytest
GUEST_CELLS_AHEAD = 3   # DHCP cells in flight per guest (linklab.pytest.ahead)
LABELS_KEY = pytest.StashKey[list[tuple[str, object]]]()


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


def vm_requested(config: pytest.Config) -> bool:
    """Whether this session runs its selection in guests (``--vm`` or ``--vm-kernel``)."""
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
    labels = item.config.stash.get(LABELS_KEY, None)
    if labels is None:
        labels = item.config.stash[LABELS_KEY] = [("kernel", kernel_release()),
                                                  ("virt", virtualisation())]
    item.user_properties.extend(labels)


# ---- the host: the leg in steps --------------------------------------------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> bool | None:
    config = session.config
    if not vm_requested(config) or config.option.collectonly or session.testsfailed:
        return None  # the default loop reports collection errors / --collect-only
    if not session.items:
        return True
    leg = plan_leg(config, session.items)
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", leg.announcement())
    host_s, load_start = process_age_s(), os.getloadavg()[0]
    boot_guests(config, leg, [item.nodeid for item in session.items])
    replay_started = time.monotonic()
    replay_leg(session, leg)
    legs, whole = leg_record(leg, host_s, time.monotonic() - replay_started, load_start)
    atomic_write(leg.phases, json.dumps(whole, indent=2))
    if reporter is not None:
        for n, one in enumerate(legs if len(legs) > 1 else ()):
            reporter.write_line(f"  guest {n}: {one['cells']} test(s), {phase_summary(one)}")
        first = leg.first_outcome()
        reporter.write_sep("=", f"{phase_summary(whole)} (kernel {first.kernel}, "
                                f"{first.virt}); guest junit {leg.junit}")
    return True


@dataclass
class Leg:
    """One VM leg: the kernel, where its files go, what its guests are handed, its guests."""

    kernel: vm.Kernel
    results_root: Path
    rundir: Path
    guest_args: list[str]
    guests: list[Guest]
    cpus: int

    @property
    def junit(self) -> Path:
        return self.rundir / f"junit-vm-{self.kernel.release}.xml"

    @property
    def phases(self) -> Path:
        return self.rundir / f"vm-leg-{self.kernel.release}.json"

    def first_outcome(self) -> vm.Outcome:
        """The first guest's outcome: its kernel and virtualisation label the whole leg."""
        return next(g.outcome for g in self.guests if g.outcome is not None)

    def announcement(self) -> str:
        split = " + ".join(str(len(g.items)) for g in self.guests)
        count = sum(len(g.items) for g in self.guests)
        return (f"linklab vm leg: {count} test(s) on {self.kernel.release}, "
                f"{len(self.guests)} guest(s) ({split}), {self.cpus} vCPU(s) and "
                f"{self.guests[0].workers} worker(s) each")


def plan_leg(config: pytest.Config, items: list[pytest.Item]) -> Leg:
    """The kernel, the run directory (cleared of this kernel's leg files) and the guests."""
    try:
        kernel = vm.find_kernel(config.getoption("vm_kernel"))
    except vm.VMError as exc:
        raise pytest.UsageError(str(exc)) from None
    run_id = os.environ.get(RUN_ID_ENV)
    if not run_id:
        run_id = os.environ[RUN_ID_ENV] = new_run_id("vm")
    results_root, args = guest_args(config)
    rundir = results_root / run_id
    rundir.mkdir(parents=True, exist_ok=True)
    cpus = config.getoption("vm_cpus")
    guests = make_guests(items, config.getoption("vm_guests"), results_root, rundir,
                         kernel.release, cpus)
    leg = Leg(kernel, results_root, rundir, args, guests, cpus)
    leg.junit.unlink(missing_ok=True)
    leg.phases.unlink(missing_ok=True)
    return leg


def guest_args(config: pytest.Config) -> tuple[Path, list[str]]:
    """The results root, and the options the guests' pytest needs to match this session."""
    try:  # linklab.pytest.plugin's option; the guest must write to the same place
        results_root = Path(config.getoption("--results-dir")).resolve()
        args = [f"--results-dir={results_root}"]
    except ValueError:
        results_root, args = vm.REPO / "results", []
    # the guest sees the host's files read-only at the same paths: hand it the same scenarios
    args += [f"--scenarios={Path(p).resolve()}" for p in config.getoption("--scenarios")]
    if config.getoption("--dhcp-matrix"):
        args.append(f"--dhcp-matrix={Path(config.getoption('--dhcp-matrix')).resolve()}")
    # other plugins' options the guest session needs (e.g. --cost-*: linklab.pytest.cost)
    args += config.stash.get(GUEST_ARGS_KEY, [])
    # a one-vCPU guest idles through every DHCP client's timeout: run cells ahead meanwhile
    args.append(f"--cells-ahead={config.getoption('--cells-ahead') or GUEST_CELLS_AHEAD}")
    return results_root, args


def boot_guests(config: pytest.Config, leg: Leg, nodeids: list[str]) -> None:
    """Warm the guests' bytecode, then boot them all and wait, owning their processes."""
    warm_bytecode(nodeids, leg.guest_args)
    capman = config.pluginmanager.getplugin("capturemanager")
    owner = Run()
    try:
        with capman.global_and_fixture_disabled():
            run_guests(leg.guests, leg.kernel, owner, leg.results_root, leg.guest_args,
                       config.option.verbose - 1, config.option.maxfail == 1,
                       config.getoption("vm_timeout"), config.getoption("vm_clock"))
    finally:
        owner.close()
        for g in leg.guests:
            g.phases.unlink(missing_ok=True)


def guest_results(guests: list[Guest]) -> tuple[dict[str, ET.Element], dict[int, str]]:
    """Every guest's test cases, and what went wrong per guest that ran none or broke."""
    cases: dict[str, ET.Element] = {}
    problems: dict[int, str] = {}
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
    return cases, problems


def replay_leg(session: pytest.Session, leg: Leg) -> None:
    """Report every item as its guest ran it; merge the guests' JUnit files into one."""
    cases, problems = guest_results(leg.guests)
    merge_junit([g.junit for g in leg.guests], leg.junit)
    first = leg.first_outcome()
    labels: list[tuple[str, object]] = [("kernel", first.kernel), ("virt", first.virt)]
    where = {item.nodeid: g for g in leg.guests for item in g.items}
    for item in session.items:
        replay(item, cases.get(junit_key(item.nodeid)), labels,
               problems.get(where[item.nodeid].index, ""))
        if session.shouldfail or session.shouldstop:
            break


def leg_record(leg: Leg, host_s: float, replay_s: float,
               load_start: float) -> tuple[list[dict], dict]:
    """Each guest's phases, and the leg's: the critical path (the last guest to finish) with
    the totals, the guests' own and the host's load before and after."""
    legs = [leg_phases(g.outcome, g.guest_phases, host_s, replay_s) | {"cells": len(g.items)}
            for g in leg.guests if g.outcome is not None]
    whole = max(legs, key=lambda one: one["total_s"]) | {
        "cells": sum(len(g.items) for g in leg.guests), "cpus": leg.cpus,
        "guests": len(leg.guests), "workers": leg.guests[0].workers, "per_guest": legs,
        "failure": next((one["failure"] for one in legs if one["failure"]), None),
        "load_1min_start": load_start, "load_1min_end": os.getloadavg()[0]}
    return legs, whole


# ---- the guest: its main session's phases ----------------------------------------------------

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
