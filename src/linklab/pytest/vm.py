"""pytest ``--vm``: run the selected tests inside a QEMU guest on a distro kernel.

The host session collects as usual, then boots one guest (``linklab.vm.run``) that runs
``<venv python> -m pytest <the selected node ids> --junitxml=...`` in the same directory,
streams its output, and replays the guest's JUnit results as this session's reports, each
labelled with the guest kernel release and virtualisation (user properties ``kernel`` and
``virt``, so the host's own ``--junitxml`` carries them too). The guest's JUnit file stays
in ``results/<run-id>/junit-vm-<release>.xml``; the guest writes its result rows into the
same run directory (it inherits ``LINKLAB_RUN_ID``).

Every test record, on the host or in the guest, carries the ``kernel`` and ``virt`` user
properties. Hooks: ``pytest_addoption``, ``pytest_configure``, ``pytest_runtest_setup``,
``pytest_runtestloop``.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from _pytest.junitxml import mangle_test_address
from _pytest.reports import TestReport

from linklab import vm


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("linklab-vm", "linklab VM leg (virtme-ng / QEMU)")
    group.addoption("--vm", action="store_true",
                    help="run the selected tests in a QEMU guest on a distro kernel "
                         "(default: newest with ipvlan)")
    group.addoption("--vm-kernel", metavar="PATH|RELEASE",
                    help="kernel image or release (prefix such as 6.1) for --vm; implies --vm")
    group.addoption("--vm-timeout", type=float, default=1800, metavar="S",
                    help="stop the guest after S seconds, boot included (default: 1800)")


def vm_requested(config: pytest.Config) -> bool:
    return bool(config.getoption("vm") or config.getoption("vm_kernel"))


def pytest_configure(config: pytest.Config) -> None:
    if not vm_requested(config):
        return
    if os.environ.get("LINKLAB_IN_VM"):
        raise pytest.UsageError("--vm given inside the linklab VM guest")
    if getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("--vm runs the selection in one guest: drop -n/--numprocesses")


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
    verbose = config.option.verbose - 1  # the replay here already lists each test id
    # --tb=no: the tracebacks travel in the JUnit file and are shown once, by the replay
    argv = [sys.executable, "-m", "pytest", f"--junitxml={junit}", *results_args, "--tb=no",
            "-rfE",
            *(["-" + "v" * verbose] if verbose > 0 else ["-q"] if verbose < 0 else []),
            *(["-x"] if config.option.maxfail == 1 else []),
            *[item.nodeid for item in items]]
    capman = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        reporter.write_sep("=", f"linklab vm leg: {len(items)} test(s) on {kernel.release}")
    from linklab.ownership import Run

    owner = Run()
    try:
        with capman.global_and_fixture_disabled():
            outcome = vm.run(argv, kernel=kernel, timeout=config.getoption("vm_timeout"),
                             rwdirs=[results_root], owner=owner)
    finally:
        owner.close()
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
    if reporter is not None:
        reporter.write_sep("=", f"{outcome.summary()} (kernel {outcome.kernel}, "
                                f"{outcome.virt}); guest junit {junit}")
    return True


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
