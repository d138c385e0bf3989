"""Two users at once (issue #24): ``make report`` and ``make test`` side by side, in one
checkout and in two (a second ``git clone`` with its own ``.venv`` made by its own
``scripts/setup``, given a commit of its own so its code is told apart).

Each user gets its run id from the Makefile (two makes started in the same second) and runs
as make would, setup first. Meanwhile the drill samples, from outside, which ownership
records (by the owner's process tree) and which QEMU guests (``-name``) belong to whom. At the
end it counts what mixed: one results directory for both, result rows and JUnit cases of one
user's scenarios in the other's run, a leg whose ``git_commit`` is the other checkout's, a
record or a guest name claimed by both (or a guest of the other's in a JUnit file); and what
was left: namespaces, processes, temp dirs, records, QEMU, tracefs instances, nft tables in
the default namespace.

Every drill runs reduced users (a few host cells and one guest each with disjoint scenarios,
the test user's guests in one checkout the cost smoke's); ``--users-full`` runs the real
``make report`` and ``make test``."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from linklab.anatomy import tracefs
from linklab.drill import ROOT
from linklab.drill.observe import Observer, descendants, processes
from linklab.drill.runner import Drill
from linklab.ownership import read_record

RUN_ID_RE = re.compile(r"\d{8}T\d{6}Z-(?:make|report)-\d+")   # the Makefile's run ids
# what the reduced users run: disjoint scenarios, so a row's scenario names its user
REPORT_HOST = ("veth", "-m", "connectivity or anatomy", "-k",
               "(veth-v4-child or test_anatomy_of_every_cell_matches_the_matrix and veth) "
               "and not bpf and not twohost and not pair")
REPORT_VM = ("ipvlan-l2-bridge", "-m", "connectivity", "-k", "ipvlan-l2-bridge-v4-child-to")
TEST_HOST = ("macvlan-bridge", "-m", "not bench and not cost", "-k",
             "macvlan-bridge-v4-child and not cni")
TEST_VM = ("netkit-l3-forward", "-m", "connectivity", "-k", "netkit-l3-forward-v4-child-to")
# make test's cost smoke (Makefile COST, --cost-smoke): two guests on the instruction clock
COST_SMOKE = ("--vm", "--vm-clock=instructions", "-m", "cost", "bench/test_cost.py",
              "--cost-smoke")
COST_DATAPATHS = ("veth-pair", "bridge")


@dataclass
class User:
    """One user: a checkout, a run id, the steps it runs and what it was seen owning."""

    name: str                       # "report" or "test"
    checkout: Path
    run_id: str
    scenarios: frozenset[str]       # the scenarios its selection runs (empty: full make)
    # its checkout's own commit, every leg's meta.json git_commit: the second checkout's (made
    # there, found nowhere else); "" for this checkout, whose HEAD others may move meanwhile
    commit: str
    markers: set[str] = field(default_factory=set)     # records its process tree owned
    vm_names: set[str] = field(default_factory=set)    # QEMU -name of guests in its tree
    results: Path | None = None     # its results root (default <checkout>/results)
    steps: list[list[str]] = field(default_factory=list)
    keep_going: bool = False        # make report renders even after a failed step
    rc: int | None = None
    root: int | None = None         # the PID of the step running now

    @property
    def rundir(self) -> Path:
        return (self.results or self.checkout / "results") / self.run_id


def run_ids(report_in: Path, test_in: Path) -> tuple[str, str]:
    """``make report``'s run id in ``report_in`` and ``make test``'s in ``test_in``, each from
    a make of its own, both started at once (the Makefile's ids, as two users starting in the
    same second get them)."""
    env = {k: v for k, v in os.environ.items() if k != "LINKLAB_RUN_ID"}
    procs = [subprocess.Popen(["make", "-s", "--no-print-directory", "-C", str(checkout),
                               "--eval", f"llu-id: ; @echo $({var})", "llu-id"],
                              stdout=subprocess.PIPE, text=True, env=env)
             for checkout, var in ((report_in, "REPORT_RUN_ID"), (test_in, "TEST_RUN_ID"))]
    report_id, test_id = (p.communicate(timeout=60)[0].strip() for p in procs)
    return report_id, test_id


def _scenario_of(case: str) -> str:
    """``test_cell[veth-v4-child-to-host]`` -> the parametrisation."""
    return case.split("[", 1)[1].rstrip("]") if "[" in case else ""


def _owns(scenarios: frozenset[str], param: str) -> bool:
    """A scenario or datapath of ``scenarios``, or one of its cells (``veth-v4-...``; not
    ``veth-pair``, the cost bench's datapath)."""
    return any(param == s or re.match(rf"{re.escape(s)}-v[46]-", param) for s in scenarios)


def _guest_names(junit: str) -> set[str]:
    """The guests a JUnit file's suites ran on (their hostname: the QEMU -name)."""
    return {s.get("hostname", "") for s in ET.parse(junit).getroot().iter("testsuite")
            if s.get("hostname", "").startswith("linklab-")}


def count_mixed(users: list[User]) -> tuple[int, list[str]]:
    """What of one user turned up in another's run: result rows and JUnit cases of its
    scenarios, legs run from the other checkout's code, records and guest names claimed by
    both (or a guest named after the other's record)."""
    n, why = 0, []
    for u in users:
        for v in (v for v in users if v is not u):
            rows = 0
            for part in glob.glob(f"{u.rundir}/*.jsonl"):
                for line in Path(part).read_text().splitlines():
                    try:
                        row = json.loads(line)
                        rows += _owns(v.scenarios, row.get("scenario") or row.get("datapath")
                                      or "")
                    except (json.JSONDecodeError, AttributeError):
                        continue
            cases, seen = 0, set(u.vm_names)   # guests seen running, and named in its JUnit
            for junit in glob.glob(f"{u.rundir}/junit*.xml"):
                try:
                    cases += sum(_owns(v.scenarios, _scenario_of(c.get("name", "")))
                                 for c in ET.parse(junit).getroot().iter("testcase"))
                    seen |= _guest_names(junit)
                except ET.ParseError:
                    why.append(f"{u.name}: {junit} does not parse")
                    n += 1
            names = {m for m in seen if m.split("-")[1:2] and m.split("-")[1] in v.markers} \
                | (seen & v.vm_names)
            if u.name < v.name:    # a pair's shared records and names are counted once
                shared = u.markers & v.markers
                n += len(shared) + (u.rundir.resolve() == v.rundir.resolve())
                why += [f"record {m} owned by {u.name} and {v.name}" for m in sorted(shared)]
                why += [f"one results directory {u.rundir}"] if u.rundir.resolve() == \
                    v.rundir.resolve() else []
            n += rows + cases + len(names)
            why += [f"{u.name}: {rows} row(s) of {v.name}'s scenarios"] if rows else []
            why += [f"{u.name}: {cases} JUnit case(s) of {v.name}'s"] if cases else []
            why += [f"{u.name}: guest {m} of {v.name}'s" for m in sorted(names)]
        meta = u.rundir / "meta.json"
        others = {v.commit for v in users if v.commit and v.commit != u.commit}
        if meta.exists():
            legs = json.loads(meta.read_text()).get("legs", {})
            wrong = [k for k, leg in legs.items() if leg.get("git_commit") in others
                     or u.commit and leg.get("git_commit") != u.commit]
            n += len(wrong)
            why += [f"{u.name}: leg {k} ran another checkout's code" for k in wrong]
    return n, why


class Sampler:
    """Who owns which record and which guest, seen from outside while the users run."""

    def __init__(self, record_dir: str, users: list[User]) -> None:
        self.record_dir, self.users = record_dir, users
        self.dup_names: set[str] = set()

    def sample(self) -> None:
        procs = processes()
        trees = {u.name: descendants(u.root, procs) | {u.root} for u in self.users
                 if u.root is not None}
        whose = {pid: name for name, tree in trees.items() for pid in tree}
        by_name = {u.name: u for u in self.users}
        for f in os.listdir(self.record_dir):
            if ".jsonl" not in f or f.startswith("."):
                continue
            try:
                owner = read_record(f"{self.record_dir}/{f}").owner
            except OSError:
                continue
            if owner in whose:
                by_name[whose[owner]].markers.add(f.split(".jsonl")[0])
        live: dict[str, int] = {}
        for p in procs.values():
            if p.comm.startswith("qemu-system") and "-name" in p.argv:
                name = p.argv[p.argv.index("-name") + 1]
                if name in live and live[name] != p.pid:
                    self.dup_names.add(name)
                live[name] = p.pid
                if p.pid in whose:
                    by_name[whose[p.pid]].vm_names.add(name)


def _run_user(u: User, env: dict[str, str], log: Path) -> None:
    """The user's steps in its checkout, one after the other, as make runs them."""
    with open(log, "w") as out:
        for argv in u.steps:
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            proc = subprocess.Popen(argv, cwd=u.checkout, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            u.root = proc.pid
            rc = proc.wait()
            u.root = None
            if rc and not u.rc:
                u.rc = rc
            if rc and not u.keep_going:
                break
    u.rc = u.rc or 0


def _default_ns_nft() -> set[str]:
    try:
        out = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True,
                             timeout=20, check=False).stdout
        return {f"{t['table']['family']} {t['table']['name']}"
                for t in json.loads(out or '{"nftables": []}')["nftables"] if "table" in t}
    except (OSError, ValueError, KeyError, subprocess.TimeoutExpired):
        return set()


def leftovers(rec: str, users: list[User], nft_before: set[str]) -> list[str]:
    """What the users' runs left once both ended (observed, not read from their records)."""
    obs = Observer(rec)
    obs.markers |= {m for u in users for m in u.markers}
    o = obs.observe()
    left = [f"namespace {n}" for n in sorted(o.namespaces)]
    left += [f"process {p} ({c})" for p, (_s, c) in sorted(o.pids.items())]
    left += [f"temp dir {p}" for p in sorted(o.paths)]
    left += [f"record {r}" for r in sorted(o.records)]
    names = {n for u in users for n in u.vm_names}
    left += [f"qemu {p.pid} ({p.argv[p.argv.index('-name') + 1]})"
             for p in processes().values() if p.comm.startswith("qemu-system")
             and "-name" in p.argv and p.argv[p.argv.index("-name") + 1] in names]
    try:    # through tracefs's own mount: /sys/kernel/tracing is not mounted everywhere
        instances = tracefs.instances()
    except (tracefs.TracefsError, OSError):
        instances = []
    left += [f"tracefs {t}" for t in instances for m in obs.markers
             if t.startswith(f"linklab-{m}-")]
    left += [f"nft table {t}" for t in sorted(_default_ns_nft() - nft_before)]
    return left


def _quick_steps(u: User, py: str, res: Path, reports: Path, cost: bool) -> None:
    """A reduced ``make report`` / ``make test``: setup, a few host cells, one guest (the test
    user with ``cost``: the cost smoke's two guests instead), the report rendered."""
    rd = res / u.run_id
    pytest = [py, "-m", "pytest", "-q", "-rfEs", f"--results-dir={res}"]
    host, guest = (REPORT_HOST, REPORT_VM) if u.name == "report" else (TEST_HOST, TEST_VM)
    vm_leg = [*pytest, "--vm", "--vm-guests=1", *guest[1:], "tests/live/test_connectivity.py"]
    u.steps = [["bash", "scripts/setup"]]
    if u.name == "report":
        u.steps += [[*pytest, *host[1:], f"--junitxml={rd}/junit-host.xml", "tests"], vm_leg,
                    [py, "-m", "linklab.cli", "report", str(rd),
                     "-o", str(reports / u.run_id / "index.html")]]
        u.keep_going = True
        u.scenarios = frozenset({host[0], guest[0]})
        return
    u.steps += [[py, "-m", "ruff", "check", "."],
                [*pytest, "-p", "xdist", "-n", "2", *host[1:], f"--junitxml={rd}/junit-host.xml",
                 "tests"]]
    if cost:
        u.steps.append([*pytest, *COST_SMOKE])
        u.scenarios = frozenset({host[0], *COST_DATAPATHS})
    else:
        u.steps.append(vm_leg)
        u.scenarios = frozenset({host[0], guest[0]})


def _commit(checkout: Path) -> str:
    """The second checkout's own commit; "" for this one (other engineers commit here)."""
    if checkout == ROOT:
        return ""
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True,
                          text=True, check=True).stdout.strip()


def _clone(d: Drill) -> Path:
    """A second checkout of this one's HEAD, with a commit of its own (its legs' git_commit
    then tells whose code ran)."""
    clone = Path(d.workdir) / "second-checkout"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-c", "user.name=linklab drill", "-c", "user.email=drill@invalid",
                    "commit", "-q", "--allow-empty", "-m", "drill: the second checkout"],
                   cwd=clone, check=True)
    return clone


def layout(d: Drill, label: str, checkouts: tuple[Path, Path], quick: bool,
           cost: bool = False) -> dict:
    """Run the report user in ``checkouts[0]`` and the test user in ``checkouts[1]`` side by
    side (quick: reduced, the test user's guests the cost smoke's with ``cost``); the figures
    of the summary line."""
    rec, _res, _log = d.fresh(f"users-{label.replace(' ', '-')}")
    base = Path(rec).parent
    report_id, test_id = run_ids(*checkouts)
    users = [User("report", checkouts[0], report_id, frozenset(), _commit(checkouts[0])),
             User("test", checkouts[1], test_id, frozenset(), _commit(checkouts[1]))]
    for u in users:
        py = str(u.checkout / ".venv/bin/python")
        if quick:
            u.results = base / f"results-{u.checkout.name}"
            _quick_steps(u, py, u.results, base / "reports", cost)
        else:
            u.steps = [["make", u.name]]
            u.keep_going = True
    nft_before = _default_ns_nft()
    sampler = Sampler(rec, users)
    t0 = time.monotonic()
    threads = []
    for u in users:
        env = {**d.env(rec), "LINKLAB_RUN_ID": u.run_id}
        if not quick:   # make chooses the id itself (the Makefile's, as a user gets it)
            env.pop("LINKLAB_RUN_ID")
        threads.append(threading.Thread(target=_run_user, args=(u, env, base / f"{u.name}.log")))
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        sampler.sample()
        time.sleep(0.2)
    wall = time.monotonic() - t0
    if not quick:   # make chose the ids: read them back from the logs
        for u in users:
            u.run_id = _made_run_id(base / f"{u.name}.log") or u.run_id
    mixed, why = count_mixed(users)
    mixed += len(sampler.dup_names)
    why += [f"guest name {n} used twice at once" for n in sorted(sampler.dup_names)]
    left = leftovers(rec, users, nft_before)
    row = {"layout": label, "rc": [u.rc for u in users], "mixed": mixed, "left": left,
           "wall_s": round(wall, 1), "run_ids": [u.run_id for u in users],
           "markers": [sorted(u.markers) for u in users],
           "guests": [sorted(u.vm_names) for u in users], "why": why}
    d.log(f"  {label}: report rc={users[0].rc} ({users[0].run_id}), test rc={users[1].rc} "
          f"({users[1].run_id}) in {wall:.0f} s; records {len(users[0].markers)} + "
          f"{len(users[1].markers)}, guests "
          f"{row['guests']}; mixed {mixed}{': ' + '; '.join(why) if why else ''}; left "
          f"{len(left)}{': ' + ', '.join(left) if left else ''}; logs in {base}")
    return row


def _made_run_id(log: Path) -> str | None:
    """The run id make chose, as its output names it (results/<id>/, reports/<id>/)."""
    found = RUN_ID_RE.search(log.read_text(errors="replace"))
    return found.group(0) if found else None


def two_users(d: Drill, quick: bool) -> list[dict]:
    """One dict per layout: layout, rc (one per user), mixed, left, wall_s."""
    # quick: the cost smoke's guests in one checkout (one .venv, one compile cache, one record
    # directory for both), a wall-clock guest each in two
    out = [layout(d, "one checkout", (ROOT, ROOT), quick, cost=True)]
    clone = _clone(d)
    try:
        out.append(layout(d, "two checkouts", (ROOT, clone), quick))
    finally:
        shutil.rmtree(clone, ignore_errors=True)
    return out
