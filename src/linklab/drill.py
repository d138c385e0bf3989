"""The reliability and safety drill (``make drill``, ``python -m linklab.drill``).

Kills real linklab runs (kill -9 and Ctrl-C) while their topologies, servers and iperf3/sockperf
are alive, checks that the next run or ``linklab clean`` removes what they owned and nothing
else (decoys survive), injects tool failures, runs concurrent sessions, feeds bad input, and
around all of it compares the default namespace byte for byte and captures the uplink for
suite traffic. Every figure lands in the printed summary table (and ``--json``).

What a dead run "owned" is *observed* independently of its ownership record, while it is
alive: namespaces ``ll<marker>-*`` of the markers in the drill's private record directory,
processes descended from the pytest process or living in those namespaces, and temp dirs
``/tmp/linklab-<marker>-*``. The cleaners under test only read the records.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
NETNS = "/run/netns"
UPLINK_FILTER = "net 198.18.0.0/15 or net 2001:db8::/32 or udp port 67 or udp port 68"
SYSCTLS = ["net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding",
           "net/ipv6/conf/all/forwarding", "net/ipv6/conf/default/forwarding",
           "net/ipv4/ping_group_range", "net/ipv6/conf/all/accept_dad",
           "net/ipv6/conf/default/accept_dad", "net/ipv6/conf/all/accept_ra",
           "net/ipv6/conf/default/accept_ra"]
DHCP_COMMS = {"kea-dhcp4", "dnsmasq"}


# ---- observing processes, namespaces and paths ------------------------------------------------

@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    start: int
    netns: int
    argv: tuple[str, ...]


def processes() -> dict[int, Proc]:
    out: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            net = os.readlink(f"/proc/{entry}/ns/net")
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = tuple(a.decode(errors="replace") for a in fh.read().split(b"\0") if a)
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] == b"Z":
            continue
        out[int(entry)] = Proc(int(entry), int(fields[1]), comm, int(fields[19]),
                               int(net[5:-1]), argv)
    return out


def descendants(root: int, procs: dict[int, Proc]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    found, todo = set(), [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in found:
                found.add(k)
                todo.append(k)
    return found


def ns_inode(name: str) -> int | None:
    try:
        return os.stat(f"{NETNS}/{name}").st_ino
    except OSError:
        return None


@dataclass
class Owned:
    """What a set of runs owns right now (observed, not read from their records)."""

    namespaces: dict[str, int | None] = field(default_factory=dict)
    pids: dict[int, tuple[int, str]] = field(default_factory=dict)   # pid -> (start, comm)
    paths: set[str] = field(default_factory=set)
    records: set[str] = field(default_factory=set)

    def count(self) -> int:
        return len(self.namespaces) + len(self.pids) + len(self.paths)

    def describe(self) -> str:
        return (f"{len(self.namespaces)} ns, {len(self.pids)} proc "
                f"({','.join(sorted({c for _s, c in self.pids.values()})) or '-'}), "
                f"{len(self.paths)} tmp")


class Observer:
    """Watches the runs whose records appear in ``record_dir``; ``exclude`` holds decoys."""

    def __init__(self, record_dir: str) -> None:
        self.record_dir = record_dir
        self.markers: set[str] = set()
        self.exclude: set[object] = set()
        self.root_pids: set[int] = set()

    def _scan_markers(self) -> set[str]:
        for f in os.listdir(self.record_dir):
            if ".jsonl" in f and not f.startswith("."):
                self.markers.add(f.split(".jsonl")[0])
        return self.markers

    def observe(self, extra_pids: set[int] = frozenset()) -> Owned:  # type: ignore[assignment]
        markers = self._scan_markers()
        o = Owned()
        for f in os.listdir(self.record_dir):
            if f.split(".jsonl")[0] in markers and ".jsonl" in f:
                o.records.add(f)
        names = os.listdir(NETNS) if os.path.isdir(NETNS) else []
        for name in names:
            if any(name.startswith(f"ll{m}-") for m in markers) and name not in self.exclude:
                o.namespaces[name] = ns_inode(name)
        inodes = {i for i in o.namespaces.values() if i}
        procs = processes()
        mine: set[int] = set(extra_pids)
        for root in self.root_pids:
            mine |= descendants(root, procs)
        for p in procs.values():
            if p.netns in inodes:
                mine.add(p.pid)
        for pid in mine:
            if pid in procs and pid not in self.root_pids and pid not in self.exclude:
                o.pids[pid] = (procs[pid].start, procs[pid].comm)
        for m in markers:
            for path in glob.glob(f"{tempfile.gettempdir()}/linklab-{m}-*"):
                if path not in self.exclude:
                    o.paths.add(path)
        return o

    def still(self, before: Owned) -> Owned:
        """Which of ``before``'s objects still exist (same PID *and* start time)."""
        now = Owned()
        procs = processes()
        now.namespaces = {n: i for n, i in before.namespaces.items() if os.path.exists(
            f"{NETNS}/{n}")}
        # a namespace whose mount is gone but whose processes live on is caught via the pids
        now.pids = {p: v for p, v in before.pids.items() if p in procs and procs[p].start == v[0]}
        now.paths = {p for p in before.paths if os.path.lexists(p)}
        now.records = {r for r in before.records if os.path.exists(f"{self.record_dir}/{r}")}
        return now


def merge(a: Owned, b: Owned) -> Owned:
    return Owned({**a.namespaces, **b.namespaces}, {**a.pids, **b.pids}, a.paths | b.paths,
                 a.records | b.records)


# ---- decoys -------------------------------------------------------------------------------

@dataclass
class Decoys:
    """Objects that look like linklab's but were never recorded: they must survive a clean."""

    namespaces: list[str]
    pid: int
    pid_start: int
    tmp: str
    proc: subprocess.Popen

    @classmethod
    def make(cls, marker: str) -> Decoys:
        other = secrets.token_hex(2)
        names = [f"ll{marker}-c7", f"ll{other}-c1"]
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            subprocess.run(["ip", "-n", name, "link", "add", f"ll{marker}-c1", "type", "veth",
                            "peer", "name", "eth0"], check=True)
        proc = subprocess.Popen(["nsenter", f"--net={NETNS}/{names[0]}", "--", "sleep", "300"],
                                start_new_session=True)
        tmp = tempfile.mkdtemp(prefix=f"linklab-{marker}-decoy-")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.pid not in processes():
            time.sleep(0.01)          # until the decoy is visible in /proc
        start = processes()[proc.pid].start
        return cls(names, proc.pid, start, tmp, proc)

    def excluded(self) -> set[object]:
        return {*self.namespaces, self.pid, self.tmp}

    def preserved(self) -> tuple[int, int]:
        """(decoys still present, decoys made)."""
        alive = processes().get(self.pid)
        ok = sum(os.path.exists(f"{NETNS}/{n}") and
                 bool(subprocess.run(["ip", "-n", n, "-j", "link", "show", "eth0"],
                                     capture_output=True, check=False).stdout) for n in self.namespaces)
        ok += int(alive is not None and alive.start == self.pid_start)
        ok += int(os.path.isdir(self.tmp))
        return ok, len(self.namespaces) + 2

    def remove(self) -> None:
        from linklab.cmd import stop_pid
        stop_pid(self.pid, self.pid_start, grace=1.0)
        self.proc.wait()
        for n in self.namespaces:
            subprocess.run(["ip", "netns", "del", n], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---- runs under test ------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str
    argv: tuple[str, ...]


def pytest_argv(*args: str) -> tuple[str, ...]:
    return (PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args)


TARGETS = {
    "connectivity": Target("connectivity", pytest_argv("-m", "connectivity")),
    "xdist": Target("xdist -n 2", pytest_argv("-n", "2", "-m", "connectivity")),
    "bench": Target("bench", pytest_argv("-m", "bench", "bench/test_bench.py",
                                         "--bench-datapaths=veth", "--bench-reps=1",
                                         "--bench-warmup=0", "--bench-duration=3",
                                         "--bench-latency-duration=3")),
    "dhcp": Target("dhcp", pytest_argv("tests/test_dhcp.py", "-k",
                                       "dhcp-C-macvlan or emulated-shared-mac")),
    "dhcp-dnsmasq": Target("dhcp (dnsmasq)", pytest_argv(
        "tests/test_dhcp.py", "-k", "dnsmasq and (dhcp-C-macvlan or emulated-shared-mac)")),
}


def dhcp_bound() -> Callable[[Owned, dict[int, Proc]], bool]:
    from linklab.dhcp.servers import holds_udp_port

    def cond(o: Owned, procs: dict[int, Proc]) -> bool:
        return any(p in procs and procs[p].comm in DHCP_COMMS and holds_udp_port(p, 67)
                   for p in o.pids)
    return cond


def comm_alive(*comms: str, arg: str | None = None) -> Callable[[Owned, dict[int, Proc]], bool]:
    def cond(o: Owned, procs: dict[int, Proc]) -> bool:
        return any(p in procs and procs[p].comm in comms and
                   (arg is None or arg in procs[p].argv) for p in o.pids)
    return cond


def namespaces_alive(n: int, runs: int = 1) -> Callable[[Owned, dict[int, Proc]], bool]:
    def cond(o: Owned, _procs: dict[int, Proc]) -> bool:
        markers = {name[2:].split("-", 1)[0] for name in o.namespaces}
        return len(o.namespaces) >= n and len(markers) >= runs
    return cond


def after_namespaces(k: int) -> Callable[[Owned, dict[int, Proc]], bool]:
    """A random moment that always comes: once the run has created its ``k``-th namespace
    (a random *time* could fall after the run's end on a fast machine), while it owns some.
    Scenarios reuse namespace names, so creations are counted as appearances."""
    present: set[str] = set()
    created = 0

    def cond(o: Owned, _p: dict[int, Proc]) -> bool:
        nonlocal present, created
        now = set(o.namespaces)
        created += len(now - present)
        present = now
        return created >= k and o.count() > 0
    return cond


class Drill:
    def __init__(self, workdir: str, seed: int, log: Callable[[str], None]) -> None:
        self.workdir = workdir
        self.rng = random.Random(seed)
        self.log = log
        self.n = 0
        self.rows: dict[str, list[dict]] = {}

    def env(self, record_dir: str) -> dict[str, str]:
        return {**os.environ, "LINKLAB_RECORD_DIR": record_dir, "PYTHONUNBUFFERED": "1"}

    def fresh(self, tag: str) -> tuple[str, str, str]:
        self.n += 1
        base = f"{self.workdir}/{self.n:02d}-{tag}"
        rec, res = f"{base}/records", f"{base}/results"
        os.makedirs(rec)
        os.makedirs(res)
        return rec, res, f"{base}/pytest.log"

    def kill_point(self, *args: object) -> dict:
        return self._guarded(self._kill_point, *args)

    def sigint_point(self, *args: object) -> dict:
        return self._guarded(self._sigint_point, *args)

    def _guarded(self, fn: Callable[..., dict], *args: object) -> dict:
        """A drill step that breaks is a row with its error; its run is stopped and cleaned."""
        self.current: subprocess.Popen | None = None
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported in the summary
            proc, rec = getattr(self, "current", None), getattr(self, "current_rec", None)
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
            if rec:
                subprocess.run([PY, "-m", "linklab.cli", "clean", "-q"], cwd=ROOT,
                               env=self.env(rec), capture_output=True, timeout=120, check=False)
            self.log(f"  step {args[0]} failed: {exc!r}")
            return {"target": getattr(args[0], "name", "?"), "trigger": str(args[1]),
                    "error": repr(exc)}

    def start(self, target: Target, rec: str, res: str, logpath: str,
              extra: tuple[str, ...] = ()) -> subprocess.Popen:
        with open(logpath, "w") as log:
            self.current = subprocess.Popen([*target.argv, f"--results-dir={res}", *extra],
                                            cwd=ROOT, env=self.env(rec), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        self.current_rec = rec
        return self.current

    def wait_for(self, proc: subprocess.Popen, obs: Observer,
                 cond: Callable[[Owned, dict[int, Proc]], bool], timeout: float = 180
                 ) -> tuple[Owned | None, float]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout and proc.poll() is None:
            o = obs.observe()
            if cond(o, processes()):
                return o, time.monotonic() - t0
            time.sleep(0.02)
        return None, time.monotonic() - t0

    # -- 1. kill -9 -------------------------------------------------------------------------
    def _kill_point(self, target: Target, trigger: str,
                   cond: Callable[[Owned, dict[int, Proc]], bool], cleaner: str,
                   probe: Callable[[Owned], dict] | None = None) -> dict:
        rec, res, logpath = self.fresh("kill")
        proc = self.start(target, rec, res, logpath)
        obs = Observer(rec)
        obs.root_pids = {proc.pid}
        row = {"target": target.name, "trigger": trigger, "cleaner": cleaner}
        seen, t = self.wait_for(proc, obs, cond)
        if seen is None:
            proc.wait()
            row.update(error=f"trigger never fired (exit {proc.returncode}, {t:.1f}s)")
            self.log(f"  kill {target.name} @{trigger}: {row['error']}")
            return row
        if probe is not None:      # at the trigger instant: servers are short-lived
            row.update(probe(seen))
        time.sleep(self.rng.uniform(0, 0.3))
        at_kill = obs.observe()
        # orphans: every process the run had, whatever happens to its parent
        tree = set(at_kill.pids)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        row["t_kill_s"] = round(t, 2)
        obs.root_pids = set()
        time.sleep(0.1)
        orphan_s = None
        if "xdist" in target.name:
            # xdist workers outlive a killed controller; the next run can only clean up after
            # them once they are gone (their records belong to live processes until then)
            workers = {p: v for p, v in obs.still(at_kill).pids.items()
                       if v[1].startswith("python")}
            t_orphan = time.monotonic()
            while workers and time.monotonic() - t_orphan < 60:
                procs_now = processes()
                workers = {p: v for p, v in workers.items()
                           if p in procs_now and procs_now[p].start == v[0]}
                time.sleep(0.05)
            orphan_s = round(time.monotonic() - t_orphan, 2)
            row["orphan_workers_after_60s"] = len(workers)
        found = merge(obs.still(at_kill), obs.observe(extra_pids=tree))
        orphans_alive = [p for p, (_s, c) in at_kill.pids.items() if c.startswith("python")]
        row["orphan_lifetime_s"] = orphan_s
        decoys = Decoys.make(min(obs.markers) if obs.markers else secrets.token_hex(2))
        obs.exclude = decoys.excluded()
        t0 = time.monotonic()
        if cleaner == "linklab clean":
            cl = subprocess.run([PY, "-m", "linklab.cli", "clean"], cwd=ROOT, env=self.env(rec),
                                capture_output=True, text=True, timeout=120, check=False)
        else:   # the next pytest session: its run fixture cleans dead runs at start
            cl = subprocess.run([*pytest_argv("tests/test_drill.py", "-k", "next_session"),
                                 f"--results-dir={res}"], cwd=ROOT, env=self.env(rec),
                                capture_output=True, text=True, timeout=180, check=False)
        row["clean_s"] = round(time.monotonic() - t0, 2)
        row["cleaner_rc"] = cl.returncode
        time.sleep(0.2)
        remaining = obs.still(found)
        row.update(owned_at_kill=at_kill.count(), found=found.count(),
                   removed=found.count() - remaining.count(), remaining=remaining.count(),
                   records_left=len(remaining.records), found_detail=found.describe(),
                   orphan_workers=len(orphans_alive))
        if remaining.count() or remaining.records:
            row["remaining_detail"] = remaining.describe() + " " + " ".join(
                sorted(remaining.namespaces)) + " " + " ".join(
                f"{p}:{c}" for p, (_s, c) in remaining.pids.items())
        row["decoys_ok"], row["decoys"] = decoys.preserved()
        decoys.remove()
        self._restore(obs, remaining, rec)
        self.log(f"  kill -9 {target.name:12} @{trigger:16} t={t:5.1f}s owned={at_kill.count():3} "
                 f"({at_kill.describe()}) found={row['found']:3} removed={row['removed']:3} left={row['remaining']} "
                 f"decoys={row['decoys_ok']}/{row['decoys']} cleaner={cleaner} "
                 f"({found.describe()})" + (f" LEFT: {row['remaining_detail']}"
                                            if row.get("remaining_detail") else ""))
        return row

    def _restore(self, obs: Observer, remaining: Owned, rec: str) -> None:
        """Whatever the cleaner under test left: stop it by PID (ours), clean again."""
        from linklab.cmd import stop_pid
        for pid, (start, _c) in remaining.pids.items():
            stop_pid(pid, start, grace=2.0)
        subprocess.run([PY, "-m", "linklab.cli", "clean", "-q"], cwd=ROOT, env=self.env(rec),
                       capture_output=True, timeout=120, check=False)
        for n in remaining.namespaces:
            if os.path.exists(f"{NETNS}/{n}"):
                subprocess.run(["ip", "netns", "del", n], check=False)
        for p in remaining.paths:
            shutil.rmtree(p, ignore_errors=True)

    # -- 2. Ctrl-C ----------------------------------------------------------------------------
    def _sigint_point(self, target: Target, trigger: str,
                     cond: Callable[[Owned, dict[int, Proc]], bool]) -> dict:
        rec, res, logpath = self.fresh("sigint")
        proc = self.start(target, rec, res, logpath)
        obs = Observer(rec)
        obs.root_pids = {proc.pid}
        row = {"target": target.name, "trigger": trigger}
        seen, _t = self.wait_for(proc, obs, cond)
        if seen is None:
            proc.wait()
            row.update(error=f"trigger never fired (exit {proc.returncode})")
            return row
        time.sleep(self.rng.uniform(0, 0.3))
        at_int = obs.observe()
        tree = set(at_int.pids)
        os.killpg(proc.pid, signal.SIGINT)     # what a terminal's Ctrl-C does
        t0 = time.monotonic()
        try:
            proc.wait(timeout=90)
            hung = False
        except subprocess.TimeoutExpired:
            hung = True
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        row.update(exit_s=round(time.monotonic() - t0, 2), rc=proc.returncode, hung=hung)
        time.sleep(0.5)
        obs.root_pids = set()
        left = merge(obs.still(at_int), obs.observe(extra_pids=tree))
        row.update(owned=at_int.count(), remaining=left.count(), records_left=len(left.records))
        if left.count() or left.records:
            from linklab.ownership import read_record
            listed = [read_record(f"{rec}/{r}") for r in left.records]
            row["remaining_detail"] = left.describe() + " " + " ".join(sorted(left.namespaces)) \
                + "".join(f" record lists ns={x.namespaces} pids={list(x.pids)} paths={x.paths}"
                          for x in listed)
        self._restore(obs, left, rec)
        self.log(f"  Ctrl-C  {target.name:12} @{trigger:16} owned={at_int.count():3} exit in "
                 f"{row['exit_s']}s rc={proc.returncode} left={row['remaining']} records_left="
                 f"{row['records_left']}" + (f" LEFT: {row['remaining_detail']}"
                                             if row.get("remaining_detail") else ""))
        return row


def dhcp_sockets(o: Owned) -> dict:
    """4b: every live DHCP server of the run is in a suite namespace, bound there only."""
    from linklab.cmd import cmd
    procs = processes()
    host_ns = os.stat("/proc/self/ns/net").st_ino
    servers = [p for p in o.pids if p in procs and procs[p].comm in DHCP_COMMS]
    outside = checked = 0
    binds: list[str] = []
    host_ss = cmd(["ss", "-H", "-lunp"]).stdout
    for pid in servers:
        if procs[pid].netns == host_ns or f"pid={pid}," in host_ss:
            outside += 1
        res = cmd(["ss", "-H", "-lunp"], ns=f"/proc/{pid}/ns/net", check=False)
        if res.returncode != 0:      # the server ended meanwhile
            continue
        mine = [f"{procs[pid].comm}:{line.split()[3]}" for line in res.stdout.splitlines()
                if f"pid={pid}," in line]
        checked += bool(mine)
        binds += mine
    return {"dhcp_servers": checked, "dhcp_outside": outside, "dhcp_binds": binds,
            "host_ss_dhcp": sum(c in host_ss for c in ("kea", "dnsmasq"))}


# ---- 3. host snapshot ---------------------------------------------------------------------

def host_state() -> dict[str, object]:
    """Default namespace: links, addresses, routes, rules, neighbours, sysctls (stable fields)."""
    from linklab.pytest.plugin import host_snapshot
    state: dict[str, object] = dict(host_snapshot())
    for argv in (["ip", "-j", "-6", "rule", "show"], ["ip", "-j", "neigh", "show"]):
        state[" ".join(argv[2:])] = json.loads(
            subprocess.run(argv, capture_output=True, text=True, check=True).stdout or "[]")
    # neighbour entries on the uplink change by themselves: the gateway's entry ages
    # REACHABLE -> STALE -> DELAY with the host's own traffic (NUD timers) and FAILED entries
    # are garbage-collected and re-created by the host's own attempts. On eth0 only entries for
    # the suite's ranges count (there must be none); elsewhere every entry, state included.
    import ipaddress
    suite = [ipaddress.ip_network("198.18.0.0/15"), ipaddress.ip_network("2001:db8::/32")]
    state["neigh show"] = sorted(
        json.dumps(n, sort_keys=True) for n in state.pop("neigh show")  # type: ignore[union-attr]
        if n.get("dev") != "eth0" or any(ipaddress.ip_address(n["dst"]) in net
                                         for net in suite
                                         if net.version == ipaddress.ip_address(n["dst"]).version))
    for key in SYSCTLS:
        with open(f"/proc/sys/{key}") as fh:
            state[f"sysctl {key}"] = fh.read()
    return state


def host_diff(before: dict[str, object], after: dict[str, object]) -> list[str]:
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            out.append(k)
    return out


# ---- the drill ----------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="linklab-drill", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="CI size: one kill point per target, two Ctrl-C points")
    ap.add_argument("--seed", type=int, default=None, help="random seed for the kill jitter")
    ap.add_argument("--only", default="", help="comma list of sections: kill,sigint,faults,"
                                               "concurrency,badinput,vm")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--make-test", action="store_true",
                    help="also run `make test` inside the host diff and the uplink capture")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    only = set(filter(None, args.only.split(",")))
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="linklab-drill-")
    print(f"linklab drill: seed {seed}, work dir {workdir}", flush=True)
    return run_all(Drill(workdir, seed, lambda m: print(m, flush=True)), args, only,
                            t_start, workdir)

def rows_of(res_dir: str, table: str) -> list[dict]:
    import pandas as pd
    files = glob.glob(f"{res_dir}/*/{table}.parquet")
    if not files:
        raise FileNotFoundError(f"no {table}.parquet under {res_dir}")
    return pd.read_parquet(files[0]).to_dict("records")


def fault_bench(d: Drill) -> list[dict]:
    """7a: iperf3 server killed, iperf3 server hung (SIGSTOP), sockperf server killed — one
    bench run; each must come back as its own error row and the run must complete."""
    rec, res, logpath = d.fresh("fault-bench")
    proc = d.start(TARGETS["bench"], rec, res, logpath)
    obs = Observer(rec)
    obs.root_pids = {proc.pid}
    plan = [("iperf3 server killed", "iperf3", "-s", "-c", signal.SIGKILL),
            ("iperf3 server hung", "iperf3", "-s", "-c", signal.SIGSTOP),
            ("sockperf server killed", "sockperf", "sr", "pp", signal.SIGKILL)]
    done: list[dict] = []
    used: set[int] = set()
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 400:
        if plan:
            what, comm, srv_arg, cli_arg, sig = plan[0]
            procs = processes()
            o = obs.observe()
            srv = [p for p in o.pids if p in procs and procs[p].comm == comm
                   and srv_arg in procs[p].argv and p not in used]
            cli = [p for p in o.pids if p in procs and procs[p].comm == comm
                   and cli_arg in procs[p].argv]
            if srv and cli:
                time.sleep(0.3)   # mid-measurement
                os.kill(srv[0], sig)
                used.add(srv[0])
                done.append({"fault": what, "at_s": round(time.monotonic() - t0, 1)})
                plan.pop(0)
        time.sleep(0.02)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wall = time.monotonic() - t0
    try:
        rows = rows_of(res, "bench")
        valid = True
    except Exception as exc:  # noqa: BLE001 - the finding is that it does not load
        rows, valid = [], False
        d.log(f"  bench parquet: {exc}")
    errors = [r for r in rows if r.get("error")]
    ok_rows = [r for r in rows if not r.get("error")]
    for f in done:
        key = "timed out" if "hung" in f["fault"] else ""
        tool = f["fault"].split()[0]
        match = [r for r in errors if tool in (r.get("tool") or "") + r["error"]
                 and key in r["error"]]
        f.update(reported=bool(match), message=match[0]["error"].splitlines()[0][:140]
                 if match else "", rc=proc.returncode, run_s=round(wall, 1),
                 parquet_valid=valid, rows=len(rows), ok_rows=len(ok_rows))
        d.log(f"  fault {f['fault']:24} at {f['at_s']}s -> reported={f['reported']} "
              f"'{f['message']}'; run exit {proc.returncode} after {wall:.0f}s, parquet "
              f"{'loads' if valid else 'INVALID'}: {len(rows)} rows ({len(errors)} error)")
    left = obs.observe()
    for f in done:
        f["left"] = left.count()
    return done


def fault_dhcp(d: Drill) -> dict:
    """7b: a DHCP server that never answers (SIGSTOP once bound): that cell fails with a
    bounded client timeout, the next cell passes, the dhcp table stays valid."""
    from linklab.dhcp.servers import holds_udp_port
    cells = "dhcp-C-macvlan-dnsmasq-default-udhcpc or dhcp-C-macvlan-kea-match-client-id-udhcpc"
    rec, res, logpath = d.fresh("fault-dhcp")
    proc = d.start(Target("dhcp", pytest_argv("tests/test_dhcp.py", "-k", cells, "-rf")),
                   rec, res, logpath)
    obs = Observer(rec)
    obs.root_pids = {proc.pid}
    t0 = time.monotonic()
    stopped = None
    while proc.poll() is None and time.monotonic() - t0 < 300:
        if stopped is None:
            procs = processes()
            for p in obs.observe().pids:
                if p in procs and procs[p].comm in DHCP_COMMS and holds_udp_port(p, 67):
                    os.kill(p, signal.SIGSTOP)
                    stopped = (procs[p].comm, time.monotonic() - t0)
                    break
        time.sleep(0.01)
    proc.wait()
    wall = time.monotonic() - t0
    out = Path(logpath).read_text()
    try:
        rows = rows_of(res, "dhcp")
        valid = True
    except Exception:  # noqa: BLE001
        rows, valid = [], False
    failed = [r for r in rows if r["outcome"] == "failed"]
    passed = [r for r in rows if r["outcome"] == "passed"]
    msg = next((ln.strip() for ln in out.splitlines() if "observed none" in ln),
               next((ln for ln in out.splitlines() if ln.startswith("FAILED")), ""))
    row = {"fault": f"DHCP server never answers ({stopped[0] if stopped else 'none stopped'})",
           "reported": bool(failed) and "observed none" in out, "message": msg[:160],
           "rc": proc.returncode, "run_s": round(wall, 1), "parquet_valid": valid,
           "rows": len(rows), "ok_rows": len(passed), "left": obs.observe().count()}
    d.log(f"  fault {row['fault']:24} -> reported={row['reported']} '{row['message']}'; "
          f"{len(passed)} other cell(s) passed; run exit {proc.returncode} after {wall:.0f}s; "
          f"dhcp parquet {'loads' if valid else 'INVALID'} ({len(rows)} rows)")
    return row


def fault_vm(d: Drill) -> dict:
    """7c: a guest kernel that panics (sysrq crash): reported as a panic, QEMU stopped,
    nothing left."""
    rec, _res, logpath = d.fresh("fault-vm")
    t0 = time.monotonic()
    with open(logpath, "w") as log:
        proc = subprocess.run([PY, "-m", "linklab.cli", "vm", "--tcg", "--timeout", "240", "--",
                               "sh", "-c", "echo c > /proc/sysrq-trigger"], cwd=ROOT,
                              env=d.env(rec), stdout=log, stderr=subprocess.STDOUT, timeout=400, check=False)
    wall = time.monotonic() - t0
    out = Path(logpath).read_text()
    qemu_left = [p.pid for p in processes().values() if p.comm.startswith("qemu-system")
                 and any(rec in a for a in p.argv)]
    row = {"fault": "QEMU guest panics", "reported": "guest panic" in out,
           "message": next((ln for ln in out.splitlines() if "guest panic" in ln), "")[:160],
           "rc": proc.returncode, "run_s": round(wall, 1), "parquet_valid": None,
           "left": len(os.listdir(rec)) + len(qemu_left)}
    d.log(f"  fault {row['fault']:24} -> rc={proc.returncode} in {wall:.0f}s "
          f"'{row['message']}'; records/qemu left {row['left']}")
    return row


def concurrency(d: Drill) -> list[dict]:
    """6: pytest -n 2, then two independent sessions at once (one shared record dir)."""
    out = []
    argv = Target("connectivity", pytest_argv("-m", "connectivity"))
    xd = Target("xdist", pytest_argv("-n", "2", "-m", "connectivity"))
    for label, targets in (("pytest -n 2 -m connectivity", [xd]),
                           ("2 sessions at once", [argv, argv])):
        rec, res, _ = d.fresh("concurrent")
        procs, logs = [], []
        t0 = time.monotonic()
        for i, t in enumerate(targets):
            logs.append(f"{d.workdir}/{d.n:02d}-concurrent/pytest-{i}.log")
            procs.append(d.start(t, rec, f"{res}/{i}", logs[-1]))
        obs = Observer(rec)
        while any(p.poll() is None for p in procs):
            obs._scan_markers()      # every run's marker, to show they never collide
            time.sleep(0.1)
        wall = time.monotonic() - t0
        for p, log in zip(procs, logs):
            tail = Path(log).read_text().strip().splitlines()[-1:] or [""]
            out.append({"what": label, "rc": p.returncode, "summary": tail[0][:120],
                        "wall_s": round(wall, 1)})
        left = obs.observe()
        out[-1]["left"] = left.count() + len(left.records)
        out[-1]["markers"] = len(obs.markers)
        d.log(f"  {label:28} rc={[p.returncode for p in procs]} in {wall:.0f}s, "
              f"{len(obs.markers)} run marker(s), left {out[-1]['left']}: "
              + " | ".join(r["summary"] for r in out[-len(procs):]))
    return out


def bad_inputs(d: Drill) -> dict:
    """5: the bad-input corpus (tests/test_drill_badinput.py), counted from its JUnit XML."""
    import xml.etree.ElementTree as ET
    rec, res, logpath = d.fresh("badinput")
    junit = f"{d.workdir}/badinput.xml"
    with open(logpath, "w") as log:
        subprocess.run([*pytest_argv("tests/test_drill_badinput.py", "-n", "2", "-rf"),
                        f"--results-dir={res}", f"--junitxml={junit}"], cwd=ROOT,
                       env=d.env(rec), stdout=log, stderr=subprocess.STDOUT, timeout=900, check=False)
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    bad = [c.get("name") for c in cases if c.find("failure") is not None
           or c.find("error") is not None]
    row = {"tried": len(cases), "clear": len(cases) - len(bad), "unclear": bad}
    d.log(f"  bad inputs: {row['tried']} tried, {row['clear']} clear errors"
          + (f"; not clear: {', '.join(bad)}" if bad else ""))
    return row


KILL_POINTS_FULL = [
    ("connectivity", "topology", lambda: namespaces_alive(5), "linklab clean", None),
    ("connectivity", "random", lambda: after_namespaces(random.randint(6, 45)), "next session",
     None),
    ("connectivity", "random", lambda: after_namespaces(random.randint(6, 45)),
     "linklab clean", None),
    ("bench", "iperf3 running", lambda: comm_alive("iperf3", arg="-c"), "next session", None),
    ("bench", "sockperf running", lambda: comm_alive("sockperf", arg="pp"), "linklab clean",
     None),
    ("dhcp", "server bound", dhcp_bound, "linklab clean", dhcp_sockets),
    ("dhcp-dnsmasq", "server bound", dhcp_bound, "next session", dhcp_sockets),
    ("dhcp-dnsmasq", "client running", lambda: comm_alive("busybox", "dhclient"),
     "linklab clean", None),
    ("xdist", "2 workers' topos", lambda: namespaces_alive(8, runs=2), "linklab clean", None),
    ("xdist", "random", lambda: after_namespaces(random.randint(12, 45)), "next session", None),
]
KILL_POINTS_QUICK = [KILL_POINTS_FULL[i] for i in (0, 3, 5, 8)]
SIGINT_FULL = [KILL_POINTS_FULL[i][:3] for i in (0, 3, 5, 8)]
SIGINT_QUICK = [KILL_POINTS_FULL[i][:3] for i in (0, 3)]


def run_all(d: Drill, args: argparse.Namespace, only: set[str], t_start: float,
            workdir: str) -> int:
    from linklab.cmd import bkg, cmd
    from linklab.ownership import Run

    def want(section: str) -> bool:
        return not only or section in only

    random.seed(d.rng.random())
    summary: dict[str, object] = {}
    before = host_state()
    me = Run()       # the drill's own record (tcpdump), in the default record directory
    pcap_dir = me.tmpdir("uplink")
    pcap = f"{pcap_dir}/uplink.pcap"
    with open(f"{pcap_dir}/tcpdump.log", "w") as tlog, \
            bkg(["tcpdump", "-i", "eth0", "-n", "-U", "-w", pcap, UPLINK_FILTER], owner=me,
                stdout=tlog, stderr=tlog):
        deadline = time.monotonic() + 10
        while "listening on" not in Path(f"{pcap_dir}/tcpdump.log").read_text() and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            if want("kill"):
                d.log("== 1. kill -9 at kill points, then `linklab clean` or the next session")
                summary["kill"] = [d.kill_point(TARGETS[t], trig, mk(), cl, probe)
                                   for t, trig, mk, cl, probe in
                                   (KILL_POINTS_QUICK if args.quick else KILL_POINTS_FULL)]
            if want("sigint"):
                d.log("== 2. Ctrl-C (SIGINT to the process group) at the same points")
                summary["sigint"] = [d.sigint_point(TARGETS[t], trig, mk())
                                     for t, trig, mk in
                                     (SIGINT_QUICK if args.quick else SIGINT_FULL)]
            if want("faults"):
                d.log("== 7. tool failures (hung server bounded by the client timeout)")
                summary["faults"] = fault_bench(d) + [fault_dhcp(d)]
            if want("vm") and not args.quick:
                summary.setdefault("faults", []).append(fault_vm(d))  # type: ignore[union-attr]
            if want("concurrency"):
                d.log("== 6. concurrency")
                summary["concurrency"] = concurrency(d)
            if args.make_test:
                d.log("== 3/4. `make test` inside the host snapshot and the uplink capture")
                t0 = time.monotonic()
                rc = subprocess.run(["make", "test"], cwd=ROOT, check=False,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
                summary["make_test"] = {"rc": rc, "wall_s": round(time.monotonic() - t0, 1)}
                d.log(f"  make test: exit {rc} in {summary['make_test']['wall_s']:.0f} s")
            if want("badinput"):
                d.log("== 5. bad input corpus")
                summary["badinput"] = bad_inputs(d)
        finally:
            time.sleep(0.5)   # let tcpdump flush the last packets
    lines = cmd(["tcpdump", "-r", pcap, "-n", "-tt"], check=False).stdout.splitlines()
    summary["uplink_packets"] = len(lines)
    summary["uplink_sample"] = lines[:5]
    shutil.rmtree(pcap_dir, ignore_errors=True)
    me.disown_path(pcap_dir)
    me.close()
    after = host_state()
    summary["host_diff"] = host_diff(before, after)
    summary["wall_s"] = round(time.monotonic() - t_start, 1)
    ok = print_summary(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1, default=str))
    shutil.rmtree(workdir, ignore_errors=True) if ok else print(f"logs kept in {workdir}")
    return 0 if ok else 1


def print_summary(s: dict) -> bool:
    kills = [r for r in s.get("kill", []) if "error" not in r]
    ints = [r for r in s.get("sigint", []) if "error" not in r]
    faults = s.get("faults", [])
    conc = s.get("concurrency", [])
    bad = s.get("badinput")
    dh = [r for r in kills if "dhcp_servers" in r]
    checks = []

    def line(label: str, value: str, good: bool) -> None:
        checks.append(good)
        print(f"  {label:44} {value:40} {'ok' if good else 'FAIL'}")

    print("\n== linklab drill summary")
    if "kill" in s:
        line("kill -9 points tried (trigger fired)", f"{len(kills)}/{len(s['kill'])}",
             len(kills) == len(s["kill"]))
        found = sum(r["found"] for r in kills)
        removed = sum(r["removed"] for r in kills)
        line("  leftovers found / removed / remaining", f"{found} / {removed} / "
             f"{sum(r['remaining'] + r['records_left'] for r in kills)}",
             removed == found and all(r["records_left"] == 0 for r in kills))
        line("  decoys preserved", f"{sum(r['decoys_ok'] for r in kills)}/"
             f"{sum(r['decoys'] for r in kills)}",
             all(r["decoys_ok"] == r["decoys"] for r in kills))
        orphans = [f"{r['orphan_workers']} for {r['orphan_lifetime_s']} s" for r in kills
                   if "xdist" in r["target"]]
        if orphans:
            print(f"  {'  xdist workers outliving the controller':44} {'; '.join(orphans)}")
    if dh:
        line("DHCP servers bound outside their namespace",
             f"{sum(r['dhcp_outside'] + r['host_ss_dhcp'] for r in dh)} of checked "
             f"{sum(r['dhcp_servers'] for r in dh)} "
             f"({', '.join(sorted({b for r in dh for b in r['dhcp_binds']}))})",
             all(r["dhcp_outside"] == 0 and r["host_ss_dhcp"] == 0 for r in dh)
             and sum(r["dhcp_servers"] for r in dh) > 0)
    if "sigint" in s:
        line("Ctrl-C points: exited / left behind",
             f"{sum(not r['hung'] for r in ints)}/{len(s['sigint'])} exited (max "
             f"{max([r['exit_s'] for r in ints] or [0])} s) / "
             f"{sum(r['remaining'] + r['records_left'] for r in ints)}",
             len(ints) == len(s["sigint"]) and not any(r["hung"] for r in ints)
             and all(r["remaining"] == 0 and r["records_left"] == 0 for r in ints))
    for f in faults:
        line(f"fault: {f['fault']}"[:44], f"{'reported' if f['reported'] else 'NOT reported'}"
             f", {'parquet ok' if f['parquet_valid'] else 'no parquet' if f['parquet_valid'] is None else 'parquet BAD'}"
             f", left {f['left']}",
             f["reported"] and f["parquet_valid"] is not False and f["left"] == 0)
    if conc:
        line("concurrent runs passed", f"{sum(r['rc'] == 0 for r in conc)}/{len(conc)} "
             f"(left {sum(r.get('left', 0) for r in conc)})",
             all(r["rc"] == 0 for r in conc) and not any(r.get("left") for r in conc))
    if bad:
        line("bad inputs tried / clear errors", f"{bad['tried']} / {bad['clear']}",
             bad["tried"] >= 20 and bad["clear"] == bad["tried"])
    line("host diff (links addrs routes rules neigh sysctls)",
         "empty" if not s["host_diff"] else ", ".join(s["host_diff"]), not s["host_diff"])
    line("packets leaked on eth0 (suite ranges, DHCP)", str(s["uplink_packets"]),
         s["uplink_packets"] == 0)
    if "make_test" in s:
        print(f"  {'make test inside the capture (exit, time)':44} "
              f"{s['make_test']['rc']}, {s['make_test']['wall_s']:.0f} s")
    print(f"  {'wall time':44} {s['wall_s']:.0f} s")
    return all(checks)


if __name__ == "__main__":
    sys.exit(main())
