"""The drill's core: start a target, kill it at a point, check what the cleaners removed."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable

from linklab.cmd import cmd, stop_pid
from linklab.drill import DHCP_COMMS, NETNS, PY, ROOT
from linklab.drill.decoys import Decoys
from linklab.drill.observe import Observer, Owned, Proc, merge, processes
from linklab.drill.targets import Target, pytest_argv
from linklab.ownership import read_record


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
        """A drill step that breaks is a row with its error; its run is stopped and cleaned.
        A drill interrupted mid-step (Ctrl-C) stops and cleans it too before it goes: the run
        has a session of its own (a terminal's Ctrl-C does not reach it), and its records live
        in the drill's work directory, which no later ``linklab clean`` reads."""
        self.current: subprocess.Popen | None = None
        try:
            return fn(*args)
        except Exception as exc:
            self._abandon()
            self.log(f"  step {args[0]} failed: {exc!r}")
            return {"target": getattr(args[0], "name", "?"), "trigger": str(args[1]),
                    "error": repr(exc)}
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Kill the current step's run (its process group) and clean its record directory."""
        proc, rec = getattr(self, "current", None), getattr(self, "current_rec", None)
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        if rec:
            subprocess.run([PY, "-m", "linklab.cli", "clean", "-q"], cwd=ROOT,
                           env=self.env(rec), capture_output=True, timeout=120, check=False)

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
            cl = subprocess.run([*pytest_argv("tests/live/test_drill.py", "-k", "next_session"),
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
                 f"({at_kill.describe()}) found={row['found']:3} removed={row['removed']:3} "
                 f"left={row['remaining']} "
                 f"decoys={row['decoys_ok']}/{row['decoys']} cleaner={cleaner} "
                 f"({found.describe()})" + (f" LEFT: {row['remaining_detail']}"
                                            if row.get("remaining_detail") else ""))
        return row

    def _restore(self, obs: Observer, remaining: Owned, rec: str) -> None:
        """Whatever the cleaner under test left: stop it by PID (ours), clean again."""
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
