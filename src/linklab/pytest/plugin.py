"""The linklab pytest plugin (a ``pytest11`` entry point: loaded wherever linklab is installed).

Options: ``--scenarios PATH`` (a directory or a file, repeatable; default: the scenarios
shipped with linklab) drives the connectivity matrix, the DHCP matrix (``dhcp/matrix.toml``
beside the scenarios, or ``--dhcp-matrix``) and the benchmark's datapaths;
``--results-dir``, ``--run-id``.

Fixtures (the pyroute2 style: scope, then what each depends on):
  ``run``                session; none. This process's :class:`~linklab.ownership.Run`
                         (marker, ownership record); dead runs' leftovers are cleaned first.
  ``results``            session; none. The :class:`~linklab.results.RunDir` of this run.
  ``linklab_scenarios``  session; none. The scenarios of ``--scenarios``, loaded once.
  ``linklab_topology``   function; ``run``. A factory: ``linklab_topology(source)`` builds a
                         scenario (bundled name, path, TOML text or dict) and returns a
                         :class:`~linklab.live.LiveTopology`; all it built is released
                         last-in-first-out when the test ends.
  ``linklab_live``       function; ``linklab_topology``. The topology named by the test's
                         ``@pytest.mark.linklab_scenario(source)`` marker.
  ``linklab_matrix``     module (indirect parameter: a Scenario); ``run``. The live topology
                         of one matrix scenario as an :class:`~linklab.probes.Observer`.
  ``linklab_cell``       parameter: the :class:`~linklab.checks.Cell` a matrix test asserts.
Test reports of connectivity cells are written to the results store as they finish; the
host's default namespace is snapshotted at session start and compared at the end. With
``--remote-env``, the two-host tests after the first dead peer agent are skipped as ``not run:``
(one cause, said once by the test it died in).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from linklab import results as store
from linklab.build import build
from linklab.capabilities import missing_link, missing_tool
from linklab.checks import UNSET, cells
from linklab.flows import FlowCheck
from linklab.live import LiveTopology, Source, scenario_from
from linklab.model import SHIPPED, Scenario, ScenarioError, load_paths, with_all_pairs
from linklab.nightly.causes import NOT_RUN
from linklab.ownership import Run, clean
from linklab.probes import Observer
from linklab.pytest import matrix
from linklab.pytest.cells import CELL_KEY
from linklab.suite import RUN_ID_ENV, current_run_id, new_run_id
from linklab.twohost.peer import AgentGone, PeerConfig, split_build

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
    group.addoption("--results-dir", default=None,
                    help="where results/<run-id>/ is written (default: results/ in the rootdir)")
    group.addoption("--run-id", default=None, help="results run id (default: time + marker)")
    group.addoption("--scenarios", action="append", default=[], metavar="PATH",
                    help="a directory of scenario files or one file; repeatable (default: the "
                         "scenarios shipped with linklab)")
    group.addoption("--dhcp-matrix", default=None, metavar="FILE",
                    help="the DHCP matrix file (default: dhcp/matrix.toml beside the scenarios)")
    group.addoption("--cells-ahead", type=int, default=None, metavar="N",
                    help="run up to N DHCP cells at once ahead of their tests, in threads "
                         "(not under xdist; default: 1, in the VM leg's guests 3)")
    group.addoption("--all-pairs", action="store_true", default=False,
                    help="probe every pair of containers (and each to its host, the gateway "
                         "and the remote) with icmp in every scenario without a [pairs] table; "
                         "the expectations come from its [expect] (child-to-child, ...)")
    group.addoption("--remote-env", default=None, metavar="FILE",
                    help="a node.env file (LINKLAB_REMOTE_TYPE/_ARGS, LINKLAB_PARENT_IF, ...): "
                         "split every two-host scenario of the matrix across this node and "
                         "the peer it names (linklab.twohost.peer; host2 on the peer)")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


MARKERS = ("connectivity: reachability, L2 semantics, MTU and DHCP checks on live datapaths",
           "bench: throughput, latency and CPU cost measurements (iperf3, sockperf)",
           ("linklab_scenario(source): the scenario the linklab_live fixture builds (a name, "
            "path, TOML text or dict)"),
           ("two_host: a cell of a scenario with two hosts (split across two nodes with "
            "--remote-env)"))


def scenario_paths(config: pytest.Config) -> list[Path]:
    """The ``--scenarios`` paths, or the shipped scenarios when none is given."""
    return [Path(p) for p in config.getoption("--scenarios")] or [SHIPPED]


SCENARIOS_KEY = pytest.StashKey[list[Scenario]]()


def matrix_scenarios(config: pytest.Config) -> list[Scenario]:
    """The scenarios of ``--scenarios``, loaded once per session (a bad file is a usage
    error naming the file and the field)."""
    if SCENARIOS_KEY not in config.stash:
        try:
            scenarios = load_paths(scenario_paths(config))
            if config.getoption("--all-pairs"):
                scenarios = [with_all_pairs(sc) for sc in scenarios]
        except ScenarioError as exc:
            raise pytest.UsageError(f"--scenarios: {exc}") from None
        config.stash[SCENARIOS_KEY] = scenarios
    return config.stash[SCENARIOS_KEY]


def dhcp_matrix_files(config: pytest.Config) -> list[Path]:
    """``--dhcp-matrix``, else every ``dhcp/matrix.toml`` beside a ``--scenarios`` path."""
    if given := config.getoption("--dhcp-matrix"):
        return [Path(given)]
    found = [(p if p.is_dir() else p.parent) / "dhcp" / "matrix.toml"
             for p in scenario_paths(config)]
    return [f for f in dict.fromkeys(found) if f.is_file()]


def _matrix_module_wanted(config: pytest.Config) -> bool:
    """``--scenarios`` without a test path: collect the packaged matrix too, so
    ``pytest -m connectivity --scenarios=DIR`` runs DIR's matrix from any directory."""
    return bool(config.getoption("--scenarios")) and \
        config.args_source != pytest.Config.ArgsSource.ARGS


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    if config.getoption("--scenarios"):
        matrix_scenarios(config)          # a bad file stops the run here, named
    if _matrix_module_wanted(config):
        config.args.append(matrix.__file__)
    if config.getoption("--results-dir") is None:   # the rootdir's results/ (or the cwd's)
        base = config.rootpath if config.inipath is not None else config.invocation_params.dir
        config.option.results_dir = str(base / "results")
    if _is_worker(config):
        return
    run_id = config.getoption("--run-id") or current_run_id() or new_run_id(os.urandom(2).hex())
    os.environ[RUN_ID_ENV] = run_id             # inherited by xdist workers
    root = config.getoption("--results-dir")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:                      # before anything is built, not at the end
        raise pytest.UsageError(f"--results-dir {root}: cannot create it: {exc.strerror}") \
            from None
    config._linklab_snapshot = host_snapshot()  # type: ignore[attr-defined]
    config._linklab_started = time.time()       # type: ignore[attr-defined]


def run_dir(config: pytest.Config) -> store.RunDir:
    return store.RunDir.create(config.getoption("--results-dir"), os.environ[RUN_ID_ENV])


def results_part(config: pytest.Config) -> str:
    """The jsonl part this process writes: one per kernel, virtualisation, VM guest (when
    ``pytest --vm`` runs several) and xdist worker."""
    guest = os.environ.get("LINKLAB_VM_GUEST", "")
    return f"{store.kernel_release()}-{store.virtualisation()}-" + (f"{guest}-" if guest else "") \
        + (config.workerinput["workerid"] if _is_worker(config) else "main")  # type: ignore[attr-defined]


def cannot_build(sc: Scenario) -> str | None:
    """Why this kernel or machine cannot build ``sc`` (a datapath, or nft for a host's
    ruleset), or None."""
    for h in sc.hosts:
        if why := missing_link(h.kind, h.mode, h.flag):
            return why
        if h.nftables and (why := missing_tool("nft")):
            return f"{sc.name}: {h.name}'s nftables ruleset: {why}"
    return None


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
def linklab_scenarios(pytestconfig: pytest.Config) -> list[Scenario]:
    """Session scope, no dependencies: the scenarios of ``--scenarios`` (sorted by name)."""
    return matrix_scenarios(pytestconfig)


@pytest.fixture
def linklab_topology(run: Run, pytestconfig: pytest.Config) -> Iterator[Callable[..., object]]:
    """Function scope; depends on ``run``. A factory building live topologies:

    ``linklab_topology(source) -> LiveTopology`` where ``source`` is a bundled scenario's or a
    ``--scenarios`` scenario's name, a path to a ``.toml`` file, TOML text, or a dict of the
    same shape ([expect] optional). Each topology gets its own ownership record (and marker,
    so several coexist), written before its namespaces exist (``run`` has cleaned dead runs'
    leftovers first); everything built is released last-in-first-out when the test ends (a
    teardown error fails the test). A datapath this kernel lacks skips the test, naming it.
    """
    search = [SHIPPED, *scenario_paths(pytestconfig)]
    with ExitStack() as stack:
        def make(source: Source) -> LiveTopology:
            sc = scenario_from(source, dict.fromkeys(search))
            if why := cannot_build(sc):
                pytest.skip(why)
            owner = Run()            # a record (and namespace marker) per topology
            stack.callback(owner.close)
            return LiveTopology(stack.enter_context(build(sc, owner)))
        yield make


@pytest.fixture
def linklab_live(request: pytest.FixtureRequest, linklab_topology: Callable[..., object]) -> object:
    """Function scope; depends on ``linklab_topology``. The live topology of the test's
    ``@pytest.mark.linklab_scenario(source)`` marker (the closest one: test, class, module)."""
    marker = request.node.get_closest_marker("linklab_scenario")
    if marker is None or len(marker.args) != 1:
        raise pytest.UsageError(f"{request.node.nodeid}: linklab_live needs "
                                "@pytest.mark.linklab_scenario(source) with one source")
    return linklab_topology(marker.args[0])


@pytest.fixture(scope="module")
def linklab_matrix(request: pytest.FixtureRequest, run: Run) -> Iterator[object]:
    """Module scope; depends on ``run``; indirect parameter: a Scenario (set by the plugin
    for tests that take ``linklab_cell``). The scenario's live topology, built once for all
    its cells and torn down LIFO, as an :class:`~linklab.probes.Observer` that observes the
    packet cells in one batch. A datapath this kernel lacks skips its cells, naming it."""
    sc: Scenario = request.param
    if why := cannot_build(sc):
        pytest.skip(why)
    if (env := request.config.getoption("--remote-env")) and len(sc.hosts) > 1:
        with split_build(sc, run, PeerConfig.from_env(Path(env))) as topo:
            yield Observer(topo, cells(sc))
        return
    with build(sc, run) as topo:
        yield Observer(topo, cells(sc))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking ``linklab_cell`` runs once per cell of every ``--scenarios`` scenario,
    with ids such as ``macvlan-private-v4-child-to-child``."""
    if "linklab_cell" not in metafunc.fixturenames:
        return
    cases = [pytest.param(sc, cell, id=cell.id, marks=[pytest.mark.xdist_group(sc.name)] + (
                 [pytest.mark.two_host] if len(sc.hosts) > 1 else []))
             for sc in matrix_scenarios(metafunc.config) for cell in cells(sc)]
    metafunc.parametrize("linklab_matrix, linklab_cell", cases, indirect=["linklab_matrix"],
                         scope="module")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The packaged matrix runs once: a test module importing it takes precedence."""
    if not _matrix_module_wanted(config):
        return
    def packaged(item: pytest.Item) -> bool:
        return getattr(item, "module", None) is matrix
    if any(getattr(i, "function", None) is matrix.test_cell and not packaged(i) for i in items):
        items[:] = [i for i in items if not packaged(i)]


# the split test in which the peer agent died first (``--remote-env``): later ones do not run
PEER_GONE_KEY = pytest.StashKey[str]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Once the peer agent died, the two-host tests after it are not run, each said so: every
    one would ask the same dead peer, whose half is in no known state (a lent NIC may be
    half-moved), and break for that one cause. Before any fixture: no agent is started."""
    gone = item.config.stash.get(PEER_GONE_KEY, None)
    if gone is not None and item.get_closest_marker("two_host"):
        pytest.skip(f"{NOT_RUN}the peer agent died in {gone} (the split stops at the first "
                    "dead agent)")


def stop_on_dead_peer(item: pytest.Item, exc: BaseException) -> None:
    """The first dead peer agent of a ``--remote-env`` session: remembered by its test."""
    if isinstance(exc, AgentGone) and item.config.getoption("--remote-env") and \
            PEER_GONE_KEY not in item.config.stash:
        item.config.stash[PEER_GONE_KEY] = item.name


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if call.excinfo is not None and call.excinfo.errisinstance(store.ResultsError):
        stop_on_results_error(item.session, call.excinfo.value)
    if call.excinfo is not None:
        stop_on_dead_peer(item, call.excinfo.value)
    try:
        save_cell_row(item, report)
    except store.ResultsError as exc:
        stop_on_results_error(item.session, exc)


def stop_on_results_error(session: pytest.Session, exc: BaseException) -> None:
    """A results directory that cannot be written (full, read-only) stops the run after the
    current test: pytest says so, naming the file, tears the topologies down and exits 2."""
    session.shouldstop = f"linklab: {exc}"


def save_cell_row(item: pytest.Item, report: pytest.TestReport) -> None:
    """The connectivity row(s) of a matrix cell's test."""
    cell = getattr(item, "callspec", None) and item.callspec.params.get("linklab_cell")
    if cell is None or not hasattr(cell, "check"):
        return
    if report.when == "call" or (report.when == "setup" and report.skipped):
        seen = item.stash.get(CELL_KEY, {})
        reason = cell.why
        if report.skipped:
            reason = str(report.longrepr[2]).removeprefix("Skipped: ") \
                if isinstance(report.longrepr, tuple) else str(report.longrepr)
        sc = item.callspec.params.get("linklab_matrix")
        base = {"scenario": cell.scenario, "kind": getattr(sc, "kind", None),
                "mode": getattr(sc, "mode", None), "flag": getattr(sc, "flag", None),
                "family": cell.family, "kernel": store.kernel_release(),
                "virt": store.virtualisation()}
        if cell.table:      # a truth table: one row per pair
            pairs = seen.get("flows") or [(fc, None) for fc in cell.flows]
            run_dir(item.config).extend("connectivity", [base | flow_row(fc) | {
                "observed": o.result if o else None, "detail": o.detail if o else "",
                "outcome": report.outcome if o is None or report.skipped else
                "passed" if o.result == fc.expected or fc.expected == UNSET else "failed",
                "reason": fc.why if o else reason} for fc, o in pairs],
                part=results_part(item.config))
            return
        run_dir(item.config).append("connectivity", base | {
            "check": cell.check, "expected": cell.expected,
            "observed": seen.get("observed"), "outcome": report.outcome, "reason": reason,
            "detail": seen.get("detail", "")} | (flow_row(cell.flows[0]) if cell.flows else {}),
            part=results_part(item.config))


def flow_row(fc: FlowCheck) -> dict[str, object]:
    """The connectivity row's columns of one flow of the scenario's own checks."""
    f = fc.flow
    return {"check": f.name, "expected": fc.expected, "src": f.src, "dst": f.dst,
            "proto": f.proto, "port": f.port, "origin": fc.origin}


def write_leg_meta(rd: store.RunDir, started: float) -> None:
    """Record this pytest session as one leg of the run (host or VM, by kernel and
    virtualisation) in meta.json; the run's own fields describe its first, host leg and its
    start is the earliest leg's."""
    meta = rd.read_meta() if (rd.path / "meta.json").exists() else {}
    leg = store.machine_meta() | {"started": started, "ended": time.time()}
    legs = dict(meta.get("legs", {}))
    legs[f"{leg['kernel']}-{leg['virt']}"] = leg
    update = {"run_id": os.environ[RUN_ID_ENV], "legs": legs,
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
    try:
        if os.environ.get("LINKLAB_IN_VM") != "1":  # the host session finalises the VM's rows
            for table in store.TABLES:              # too (pandas alone takes ~30 s to import)
                rd.finalise(table)
        write_leg_meta(rd, config._linklab_started)  # type: ignore[attr-defined]
    except store.ResultsError as exc:
        config.get_terminal_writer().line(f"linklab: {exc}", red=True)
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    after = host_snapshot()
    before = config._linklab_snapshot  # type: ignore[attr-defined]
    if after != before:
        changed = [k for k in before if before[k] != after.get(k)]
        session.config.get_terminal_writer().line(
            f"linklab: the default namespace changed during the run ({', '.join(changed)})",
            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
