"""``python -m linklab.drill``: run the sections and print the summary table."""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from linklab.cmd import bkg, cmd
from linklab.drill import ROOT, UPLINK_FILTER
from linklab.drill.faults import bad_inputs, concurrency, fault_bench, fault_dhcp, fault_vm
from linklab.drill.host import host_diff, host_state
from linklab.drill.inputs import GENERATED_CASES, generated_inputs, hostile_strings, results_disk
from linklab.drill.nightly import NIGHTLY_FAULTS, nightly_faults
from linklab.drill.runner import Drill, dhcp_sockets
from linklab.drill.targets import (
    TARGETS,
    after_namespaces,
    comm_alive,
    dhcp_bound,
    namespaces_alive,
)
from linklab.drill.users import two_users
from linklab.ownership import Run


def main(argv: list[str] | None = None) -> int:
    doc = sys.modules["linklab.drill"].__doc__ or ""
    ap = argparse.ArgumentParser(prog="linklab-drill", description=doc.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="CI size: one kill point per target, two Ctrl-C points")
    ap.add_argument("--seed", type=int, default=None, help="random seed for the kill jitter")
    ap.add_argument("--only", default="", help="comma list of sections: kill,sigint,faults,"
                    "concurrency,badinput,generated,hostile,disk,users,nightly,vm")
    ap.add_argument("--generated-cases", type=int, default=GENERATED_CASES,
                    help="generated bad input: examples per property (default %(default)s)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--nightly", action="store_true",
                    help="also break live nights on the two Vagrant/libvirt VMs (ci/nightly "
                         f"--local): {', '.join(NIGHTLY_FAULTS)}; about half an hour")
    ap.add_argument("--nightly-fault", action="append", default=[], choices=NIGHTLY_FAULTS,
                    help="with --nightly: only this fault (repeatable)")
    ap.add_argument("--users-full", action="store_true",
                    help="two users at once with the real make report and make test (each "
                         "~20 min alone) instead of the reduced users every drill runs")
    ap.add_argument("--make-test", action="store_true",
                    help="also run `make test` inside the host diff and the uplink capture")
    args = ap.parse_args(argv)
    # started as a background job (`make drill &`, some CI runners) the drill inherits SIGINT
    # ignored, and so would every session it starts: its Ctrl-C points would then see a run
    # finish (rc 0 after 50 s) instead of an interrupted one. A handler here is SIG_DFL in them.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    only = set(filter(None, args.only.split(",")))
    t_start = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="linklab-drill-")
    print(f"linklab drill: seed {seed}, work dir {workdir}", flush=True)
    return run_all(Drill(workdir, seed, lambda m: print(m, flush=True)), args, only,
                            t_start, workdir)

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
            if want("generated"):
                d.log("== 5b. generated bad input (Hypothesis)")
                summary["generated"] = generated_inputs(d, args.generated_cases)
            if want("hostile"):
                d.log("== 5c. hostile strings in a report (headless Chromium)")
                summary["hostile"] = hostile_strings(d)
            if want("disk"):
                d.log("== 5d. results on a disk that fills / turns read-only mid-run")
                summary["disk"] = results_disk(d)
            if want("users"):
                d.log("== 6b. two users at once: one checkout and two checkouts")
                summary["users"] = two_users(d, quick=not args.users_full)
            if args.nightly or "nightly" in only:
                d.log("== 8. the nightly's own failures, live on the two VMs")
                summary["nightly"] = nightly_faults(d, tuple(args.nightly_fault))
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
    gen, hostile, disk = s.get("generated"), s.get("hostile"), s.get("disk")
    users, nightly = s.get("users", []), s.get("nightly", [])
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
        # pytest exits 2 when interrupted: a 0 means the run never saw the Ctrl-C
        line("Ctrl-C points: interrupted / left behind",
             f"{sum(not r['hung'] and r['rc'] == 2 for r in ints)}/{len(s['sigint'])} "
             f"interrupted (max {max([r['exit_s'] for r in ints] or [0])} s) / "
             f"{sum(r['remaining'] + r['records_left'] for r in ints)}",
             len(ints) == len(s["sigint"]) and not any(r["hung"] for r in ints)
             and all(r["rc"] == 2 for r in ints)
             and all(r["remaining"] == 0 and r["records_left"] == 0 for r in ints))
    for f in faults:
        parquet = ("parquet ok" if f["parquet_valid"] else
                   "no parquet" if f["parquet_valid"] is None else "parquet BAD")
        line(f"fault: {f['fault']}"[:44], f"{'reported' if f['reported'] else 'NOT reported'}"
             f", {parquet}, left {f['left']}",
             f["reported"] and f["parquet_valid"] is not False and f["left"] == 0)
    if conc:
        line("concurrent runs passed", f"{sum(r['rc'] == 0 for r in conc)}/{len(conc)} "
             f"(left {sum(r.get('left', 0) for r in conc)})",
             all(r["rc"] == 0 for r in conc) and not any(r.get("left") for r in conc))
    if bad:
        line("bad inputs tried / clear errors", f"{bad['tried']} / {bad['clear']}",
             bad["tried"] >= 20 and bad["clear"] == bad["tried"])
    if gen:
        line("generated bad input: cases/tracebacks/hangs",
             f"{gen['cases']} / {gen['tracebacks']} / {gen['hangs']} ({gen['wall_s']:.0f} s)",
             gen["cases"] >= 1000 and gen["tracebacks"] == 0 and gen["hangs"] == 0)
    if hostile:
        line("hostile strings: scripts run / shown as text",
             f"{hostile['scripts_run']} / {hostile['shown']} ({hostile['wall_s']:.0f} s)",
             hostile["passed"] and hostile["scripts_run"] == 0)
    if disk:
        line("results disk full / read-only: clean stops",
             f"{disk['passed']}/{disk['tried']}, rows kept "
             f"{' + '.join(map(str, disk['rows_kept']))} ({disk['wall_s']:.0f} s)",
             disk["tried"] == 3 and disk["passed"] == 3 and all(disk["rows_kept"]))
    for u in users:
        line(f"two users, {u['layout']}: both finished"[:44],
             f"{' + '.join(str(rc) for rc in u['rc'])} exit, {u['mixed']} mixed, left "
             f"{len(u['left'])} ({u['wall_s']:.0f} s)",
             all(rc == 0 for rc in u["rc"]) and u["mixed"] == 0 and not u["left"])
    for n in nightly:
        line(f"nightly: {n['fault']}"[:44],
             f"{'broke' if n['broke'] else 'NOT broken'}, cause "
             f"{'named' if n['named'] else 'NOT named'}, {n['seconds']:.0f} s, left "
             f"{len(n['left'])}",
             n["broke"] and n["named"] and n["destroyed"] and not n["left"])
    line("host diff (links addrs routes rules neigh sysctls)",
         "empty" if not s["host_diff"] else ", ".join(s["host_diff"]), not s["host_diff"])
    line("packets leaked on eth0 (suite ranges, DHCP)", str(s["uplink_packets"]),
         s["uplink_packets"] == 0)
    if "make_test" in s:
        print(f"  {'make test inside the capture (exit, time)':44} "
              f"{s['make_test']['rc']}, {s['make_test']['wall_s']:.0f} s")
    print(f"  {'wall time':44} {s['wall_s']:.0f} s")
    return all(checks)
