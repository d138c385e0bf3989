"""Injected tool failures, concurrent sessions and the bad-input corpus."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from linklab.dhcp.servers import holds_udp_port
from linklab.drill import DHCP_COMMS, PY, ROOT
from linklab.drill.observe import Observer, processes
from linklab.drill.runner import Drill
from linklab.drill.targets import TARGETS, Target, pytest_argv


def rows_of(res_dir: str, table: str) -> list[dict]:
    import pandas as pd  # lazy: heavy (~0.35 s), only the summary reads parquet

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
    except Exception as exc:
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
    cells = "dhcp-C-macvlan-dnsmasq-default-udhcpc or dhcp-C-macvlan-kea-match-client-id-udhcpc"
    rec, res, logpath = d.fresh("fault-dhcp")
    proc = d.start(Target("dhcp", pytest_argv("tests/live/test_dhcp.py", "-k", cells, "-rf")),
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
    except Exception:
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
                              env=d.env(rec), stdout=log, stderr=subprocess.STDOUT, timeout=400,
                              check=False)
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
    """5: the bad-input corpus (tests/live/test_drill_badinput.py and the scenario-directory
    cases of tests/unit/test_scenarios.py), counted from its JUnit XML."""
    corpus = ("tests/live/test_drill_badinput.py",
              "tests/unit/test_scenarios.py::test_bad_scenario_in_a_scenario_dir")
    rec, res, logpath = d.fresh("badinput")
    junit = f"{d.workdir}/badinput.xml"
    with open(logpath, "w") as log:
        subprocess.run([*pytest_argv(*corpus, "-n", "2", "-rf"),
                        f"--results-dir={res}", f"--junitxml={junit}"], cwd=ROOT,
                       env=d.env(rec), stdout=log, stderr=subprocess.STDOUT, timeout=900,
                       check=False)
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    bad = [c.get("name") for c in cases if c.find("failure") is not None
           or c.find("error") is not None]
    row = {"tried": len(cases), "clear": len(cases) - len(bad), "unclear": bad}
    d.log(f"  bad inputs: {row['tried']} tried, {row['clear']} clear errors"
          + (f"; not clear: {', '.join(bad)}" if bad else ""))
    return row
