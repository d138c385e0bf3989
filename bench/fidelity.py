#!/usr/bin/env python3
"""Fidelity: does linklab's TCP measurement report what iperf3 itself reports?

On one topology (default: the veth-pair reference, built once), alternate linklab's TCP
measurement (server per measurement via bkg, readiness poll, interval slicing, CPU sampling)
with a bare ``iperf3 -s`` / ``iperf3 -c -J`` pair started by hand, the same duration and no
warm-up slice on either side (like with like). Prints each repetition, the medians and CVs,
and as its last line ``fidelity ratio: X`` = median(linklab) / median(bare).
Target: X >= 0.97 with CV <= 5 % over 5 repetitions on a quiet machine.

Usage: sudo .venv/bin/python bench/fidelity.py [--reps 5] [--duration 2] [--datapath NAME]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from linklab.bench.datapaths import VETH_PAIR, datapaths, open_datapath
from linklab.bench.measure import MATRIX, Endpoints, Params, measure
from linklab.bench.stats import summarise
from linklab.cmd import proc_starttime, stop_pid
from linklab.ownership import Run

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO, TARGET_CV = 0.97, 0.05
PORT = 5299


def bare_iperf3(ep: Endpoints, duration: int, run: Run) -> float:
    """A plain iperf3 server and client started by hand; the receiver's bit/s."""
    server = ["nsenter", f"--net={ep.server.path}", "--", "iperf3", "-s", "-1", "-p", str(PORT)]
    proc = subprocess.Popen(server, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    start = proc_starttime(proc.pid)
    run.own_pid(proc.pid, start, server)
    try:
        deadline = time.monotonic() + 5
        while True:
            ss = subprocess.run(["nsenter", f"--net={ep.server.path}", "--", "ss", "-Hltn",
                                 f"sport = :{PORT}"], capture_output=True, text=True,
                                check=False)
            if ss.stdout.strip():
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("fidelity: the bare iperf3 server did not start")
            time.sleep(0.01)
        out = subprocess.run(["nsenter", f"--net={ep.client.path}", "--", "iperf3", "-c",
                              ep.server_addr, "-p", str(PORT), "-t", str(duration), "-J"],
                             capture_output=True, text=True, timeout=duration + 30,
                             check=False)
        doc = json.loads(out.stdout)
        if doc.get("error"):
            raise SystemExit(f"fidelity: bare iperf3: {doc['error']}")
        return float(doc["end"]["sum_received"]["bits_per_second"])
    finally:
        if proc.poll() is None:
            stop_pid(proc.pid, start)
        proc.wait()
        run.disown_pid(proc.pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--duration", type=int, default=2, help="seconds per run (default 2)")
    ap.add_argument("--datapath", default=VETH_PAIR.name,
                    help="loopback, veth-pair (default) or a scenario name")
    args = ap.parse_args()
    if args.reps < 2 or args.duration < 1:
        ap.error("--reps must be >= 2 and --duration >= 1")
    known = {d.name: d for d in datapaths(ROOT / "scenarios")}
    if args.datapath not in known:
        ap.error(f"--datapath: unknown {args.datapath!r}; known: {', '.join(known)}")
    dp = known[args.datapath]
    spec = next(s for s in MATRIX if s.name == "tcp-forward-x1")
    params = Params(duration_s=args.duration, omit_s=0.0)   # like with like: whole run
    run = Run()
    ours: list[float] = []
    bare: list[float] = []
    try:
        with open_datapath(dp, run) as ep:
            for rep in range(args.reps + 1):           # rep 0: warm-up of both, dropped
                out = measure(spec, ep, params, run, PORT + 1)
                if out.error:
                    raise SystemExit(f"fidelity: linklab measurement failed: {out.error}")
                mine = next(f.value for f in out.figures if f.metric == "throughput_bps")
                theirs = bare_iperf3(ep, args.duration, run)
                tag = "warm-up" if rep == 0 else f"rep {rep}/{args.reps}"
                print(f"{dp.name} {tag:<8} linklab {mine / 1e9:7.3f} Gbit/s   "
                      f"bare iperf3 {theirs / 1e9:7.3f} Gbit/s", flush=True)
                if rep:
                    ours.append(mine)
                    bare.append(theirs)
    finally:
        run.close()
    a, b = summarise(ours), summarise(bare)
    ratio = a.median / b.median
    print(f"linklab median {a.median / 1e9:.3f} Gbit/s (CV {100 * a.cv:.1f} %), bare iperf3 "
          f"median {b.median / 1e9:.3f} Gbit/s (CV {100 * b.cv:.1f} %)")
    met = ratio >= TARGET_RATIO and a.cv <= TARGET_CV and b.cv <= TARGET_CV
    print(f"target ratio >= {TARGET_RATIO} and CV <= {100 * TARGET_CV:.0f} %: "
          f"{'met' if met else 'NOT met (a busy machine inflates CV)'}")
    print(f"fidelity ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
