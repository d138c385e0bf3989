"""The linklab pytest plugin (a ``pytest11`` entry point: loaded wherever linklab is installed).

Fixtures:
  ``run``      session: this process's :class:`~linklab.ownership.Run` (marker, ownership log);
               dead runs' leftovers are cleaned when it starts.
  ``results``  session: the :class:`~linklab.results.RunDir` of this pytest run
               (``--results-dir``, default ``results/``; one run id shared by xdist workers).
  ``scenario_dir``  session: the directory holding the scenario files.
Test reports of connectivity cells are written to the results store as they finish; the
host's default namespace is snapshotted at session start and compared at the end.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from linklab import results as store
from linklab.model import SHIPPED
from linklab.ownership import Run, clean

ROOT = Path(__file__).resolve().parents[3]
SNAPSHOT_CMDS = (["ip", "-j", "link", "show"], ["ip", "-j", "addr", "show"],
                 ["ip", "-j", "-4", "route", "show", "table", "all"],
                 ["ip", "-j", "-6", "route", "show", "table", "all"], ["ip", "-j", "rule", "show"])
VOLATILE = {"operstate", "linkmode", "txqlen", "valid_life_time", "preferred_life_time",
            "stats", "stats64", "expires", "lastused"}


def host_snapshot() -> dict[str, object]:
    """The default namespace's links, addresses, routes and rules (stable fields only)."""
    def strip(obj: object) -> object:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in VOLATILE}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj
    out = {}
    for argv in SNAPSHOT_CMDS:
        text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        out[" ".join(argv[2:])] = strip(json.loads(text or "[]"))
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("linklab")
    group.addoption("--results-dir", default=str(ROOT / "results"),
                    help="where results/<run-id>/ is written (default: results/)")
    group.addoption("--run-id", default=None, help="results run id (default: time + marker)")
    group.addoption("--scenarios", default=str(SHIPPED),
                    help="directory of scenario files (default: the scenarios shipped with linklab)")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def pytest_configure(config: pytest.Config) -> None:
    if _is_worker(config):
        return
    run_id = config.getoption("--run-id") or os.environ.get("LINKLAB_RUN_ID") or \
        store.new_run_id(os.urandom(2).hex())
    os.environ["LINKLAB_RUN_ID"] = run_id       # inherited by xdist workers
    root = config.getoption("--results-dir")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:                      # before anything is built, not at the end
        raise pytest.UsageError(f"--results-dir {root}: cannot create it: {exc.strerror}") \
            from None
    config._linklab_snapshot = host_snapshot()  # type: ignore[attr-defined]
    config._linklab_started = time.time()       # type: ignore[attr-defined]


def run_dir(config: pytest.Config) -> store.RunDir:
    return store.RunDir.create(config.getoption("--results-dir"), os.environ["LINKLAB_RUN_ID"])


def results_part(config: pytest.Config) -> str:
    """The jsonl part this process writes: one per kernel, virtualisation and xdist worker."""
    return f"{store.kernel_release()}-{store.virtualisation()}-" + \
        (config.workerinput["workerid"] if _is_worker(config) else "main")  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def run() -> Iterator[Run]:
    """This process's ownership run; dead runs' leftovers are removed first."""
    clean(log=lambda _m: None)
    r = Run()
    yield r
    r.close()


@pytest.fixture(scope="session")
def results(pytestconfig: pytest.Config) -> store.RunDir:
    """The results directory of this pytest run."""
    return run_dir(pytestconfig)


@pytest.fixture(scope="session")
def scenario_dir(pytestconfig: pytest.Config) -> Path:
    return Path(pytestconfig.getoption("--scenarios"))


CELL_KEY = pytest.StashKey[dict]()


def record_observation(item: pytest.Item, observed: str, detail: str) -> None:
    """Called by a cell test before it asserts: what the kernel actually did."""
    item.stash[CELL_KEY] = {"observed": observed, "detail": detail}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    cell = getattr(item, "callspec", None) and item.callspec.params.get("cell")
    if cell is None or not hasattr(cell, "check"):
        return
    if report.when == "call" or (report.when == "setup" and report.skipped):
        seen = item.stash.get(CELL_KEY, {})
        reason = cell.why
        if report.skipped:
            reason = str(report.longrepr[2]).removeprefix("Skipped: ") \
                if isinstance(report.longrepr, tuple) else str(report.longrepr)
        sc = item.callspec.params.get("topology") or item.callspec.params.get("scenario")
        run_dir(item.config).append("connectivity", {
            "scenario": cell.scenario, "kind": getattr(sc, "kind", None),
            "mode": getattr(sc, "mode", None), "flag": getattr(sc, "flag", None),
            "family": cell.family, "check": cell.check, "expected": cell.expected,
            "observed": seen.get("observed"), "outcome": report.outcome, "reason": reason,
            "detail": seen.get("detail", ""), "kernel": store.kernel_release(),
            "virt": store.virtualisation()}, part=results_part(item.config))


def write_leg_meta(rd: store.RunDir, started: float) -> None:
    """Record this pytest session as one leg of the run (host or VM, by kernel and
    virtualisation) in meta.json; the run's own fields describe its first, host leg and its
    start is the earliest leg's."""
    meta = rd.read_meta() if (rd.path / "meta.json").exists() else {}
    leg = store.machine_meta() | {"started": started, "ended": time.time()}
    legs = dict(meta.get("legs", {}))
    legs[f"{leg['kernel']}-{leg['virt']}"] = leg
    update = {"run_id": os.environ["LINKLAB_RUN_ID"], "legs": legs,
              "started": min(started, meta.get("started", started)),
              "ended": max(leg["ended"], meta.get("ended", 0))}
    if "kernel" not in meta or os.environ.get("LINKLAB_IN_VM") != "1":
        update |= {k: v for k, v in leg.items() if k not in ("started", "ended")}
    rd.write_meta(update)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if _is_worker(config):
        return
    rd = run_dir(config)
    if os.environ.get("LINKLAB_IN_VM") != "1":  # the host session finalises the VM's rows too
        for table in store.TABLES:              # (pandas alone takes ~30 s to import there)
            rd.finalise(table)
    write_leg_meta(rd, config._linklab_started)  # type: ignore[attr-defined]
    after = host_snapshot()
    before = config._linklab_snapshot  # type: ignore[attr-defined]
    if after != before:
        changed = [k for k in before if before[k] != after.get(k)]
        session.config.get_terminal_writer().line(
            f"linklab: the default namespace changed during the run ({', '.join(changed)})",
            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
