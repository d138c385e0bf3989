#!/usr/bin/env python3
"""Power of the benchmark gate on this machine: how often does it cry wolf, how often does it
catch a real 10 % slowdown, and how many repetitions would ``make report`` need?

What it does (one topology, default the veth-pair reference, built once):

1. measures POOL short TCP forward (1 stream) repetitions with the datapath as it is (A) and
   POOL with a ``tc tbf`` rate limit on the client's interface (B; netem is not available
   on every kernel), calibrated so that B's achieved rate is 90 % of A's (TCP through tbf
   gets less than the configured rate), alternating A and B so that a drift of the machine
   hits both alike;
2. A/A: splits the A pool at random into two sets of n repetitions, many times, and judges
   each split with the report's own test (linklab.bench.compare: Welch on logs, threshold 5 %):
   the share judged "regressed" is the false alarm rate;
3. A/B: draws n repetitions from A as baseline and n from B as current run, many times: the
   share judged "regressed" is the detection rate;
4. does so for several n, prints the smallest n meeting false alarms <= 5 % and detection
   >= 95 %, and the minutes a full ``make report`` bench needs for it; if that does not fit
   in the 15-minute budget, the smallest slowdown the affordable n detects, found by scaling
   A's own repetitions (a pure multiplicative slowdown with A's real noise).

The resampled comparisons re-use the same POOL measurements, so they are not independent
trials: the rates are estimates of what fresh runs would give, not counts of separate runs.
Ends with ``false alarm rate: X`` and ``detection rate: Y`` at the chosen repetitions.

Usage: sudo .venv/bin/python bench/power.py [--pool 30] [--duration 1] [--datapath veth-pair]
       [--save pools.json | --load pools.json]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from pathlib import Path

from linklab.bench.compare import ALPHA, Threshold, judge
from linklab.bench.datapaths import VETH_PAIR, datapaths, missing, open_datapath
from linklab.bench.measure import MATRIX, Layout, Params, measure
from linklab.bench.runner import Settings
from linklab.bench.stats import detectable_change
from linklab.cmd import cmd
from linklab.ownership import Run

ROOT = Path(__file__).resolve().parents[1]
GATE = Threshold("throughput", 5.0)         # what `linklab report` applies by default
SLOWDOWN = 0.10                             # the slowdown the gate must catch
TARGET_FALSE, TARGET_DETECT = 0.05, 0.95
BUDGET_MIN = 15.0                           # a whole `make report`
PORT = 5399


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def tcp_rate(ep: object, params: Params, run: Run, layout: Layout) -> tuple[float, bool]:
    """One TCP forward 1-stream measurement: (bit/s, disturbed)."""
    spec = next(s for s in MATRIX if s.name == "tcp-forward-x1")
    out = measure(spec, ep, params, run, PORT, layout)  # type: ignore[arg-type]
    if out.error:
        raise SystemExit(f"power: measurement failed: {out.error}")
    value = next(f.value for f in out.figures if f.metric == "throughput_bps")
    return value, bool(out.host and out.host.disturbed)


def gate_rate(pool_a: list[float], pool_b: list[float] | None, n: int, trials: int,
              rng: random.Random, family: int = 1, scale: float = 1.0) -> float:
    """Share of resampled comparisons the gate calls a regression. A/A when ``pool_b`` is
    None (a random split of A into two sets of n), else baseline from A, current from B
    (or from A scaled by ``scale``). ``family``: the Holm family size the figure sits in
    (approximated by testing at alpha / family, Holm's first step)."""
    hits = 0
    for _ in range(trials):
        if pool_b is None and scale == 1.0:
            both = rng.sample(pool_a, 2 * n)
            base, cur = both[:n], both[n:]
        elif pool_b is None:
            both = rng.sample(pool_a, 2 * n)
            base, cur = both[:n], [v * scale for v in both[n:]]
        else:
            base, cur = rng.sample(pool_a, n), rng.sample(pool_b, n)
        (v,) = judge([(cur, base, "throughput_bps")], alpha=ALPHA / family)
        hits += GATE.fails(v)
    return hits / trials


def measure_pools(dp: object, params: Params, pool: int) -> tuple[list[float], list[float]]:
    """POOL repetitions free (A) and rate-limited (B), alternating."""
    layout = Layout.choose()
    run = Run()
    pool_a: list[float] = []
    pool_b: list[float] = []
    disturbed = 0
    t0 = time.monotonic()
    print(f"power: {dp.name}, {pool} + {pool} repetitions of {params.duration_s} s, "
          f"server CPU {layout.server_cpu}, client CPU {layout.client_cpu}; "
          f"loadavg at start: {loadavg()}", flush=True)
    try:
        with open_datapath(dp, run) as ep:
            dev = ep.ifnames["client"]
            tbf = ["tc", "qdisc", "replace", "dev", dev, "root", "tbf", "burst", "512kb",
                   "latency", "50ms", "rate"]

            def limited(rate: float) -> float:
                cmd([*tbf, f"{int(rate)}bit"], ns=ep.client)
                try:
                    return tcp_rate(ep, params, run, layout)[0]
                finally:
                    cmd(["tc", "qdisc", "del", "dev", dev, "root"], ns=ep.client)

            # TCP through tbf reaches less than the configured rate: aim the *achieved* rate
            # at 90 % of A's by correcting the configured one twice
            free = [tcp_rate(ep, params, run, layout)[0] for _ in range(5)]
            target = (1 - SLOWDOWN) * statistics.median(free)
            limit = target
            for _ in range(2):
                got = statistics.median([limited(limit) for _ in range(3)])
                limit *= target / got
            print(f"calibration: A median {statistics.median(free) / 1e9:.3f} Gbit/s; tbf rate "
                  f"{limit / 1e9:.3f} Gbit/s on {dev} (client side) aims B at "
                  f"{target / 1e9:.3f} Gbit/s", flush=True)
            tbf_now = [*tbf, f"{int(limit)}bit"]
            for i in range(pool):
                for side in ("A", "B") if i % 2 == 0 else ("B", "A"):
                    if side == "B":
                        cmd(tbf_now, ns=ep.client)
                    try:
                        value, dist = tcp_rate(ep, params, run, layout)
                    finally:
                        if side == "B":
                            cmd(["tc", "qdisc", "del", "dev", dev, "root"], ns=ep.client)
                    (pool_a if side == "A" else pool_b).append(value)
                    disturbed += dist
                print(f"  rep {i + 1:>3}/{pool}  A {pool_a[-1] / 1e9:6.3f}  "
                      f"B {pool_b[-1] / 1e9:6.3f} Gbit/s   loadavg {loadavg()}", flush=True)
    finally:
        run.close()
    minutes = (time.monotonic() - t0) / 60
    print(f"measured in {minutes:.1f} min; loadavg at end: {loadavg()}; "
          f"{disturbed} of {2 * pool} measurements disturbed")
    return pool_a, pool_b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pool", type=int, default=30, help="repetitions of A and of B (default 30)")
    ap.add_argument("--duration", type=int, default=1,
                    help="iperf3 seconds per repetition, as make report's default (1)")
    ap.add_argument("--datapath", default=VETH_PAIR.name)
    ap.add_argument("--trials", type=int, default=600, help="resampled comparisons per n")
    ap.add_argument("--save", type=Path, help="write both pools (bit/s) and loadavg to this "
                    "JSON file, to re-run the resampling with --load")
    ap.add_argument("--load", type=Path, help="skip measuring: resample the pools of a --save file")
    ap.add_argument("--fixed-min", type=float, default=5.0,
                    help="minutes make report spends outside the benchmark (connectivity, "
                         "VM leg, render; default 5)")
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    if args.pool < 6 or args.duration < 1:
        ap.error("--pool must be >= 6 and --duration >= 1")
    known = {d.name: d for d in datapaths(ROOT / "scenarios")}
    if args.datapath not in known:
        ap.error(f"--datapath: unknown {args.datapath!r}; known: {', '.join(known)}")
    dp = known[args.datapath]
    params = Params(duration_s=args.duration, omit_s=0.5 if args.duration > 1 else 0.25)
    if args.load:
        saved = json.loads(args.load.read_text())
        pool_a, pool_b = saved["a_bps"], saved["b_bps"]
        print(f"power: resampling the pools of {args.load} (measured at loadavg "
              f"{saved['loadavg_start']} .. {saved['loadavg_end']})")
    else:
        start_load = loadavg()
        pool_a, pool_b = measure_pools(dp, params, args.pool)
        if args.save:
            args.save.write_text(json.dumps({"a_bps": pool_a, "b_bps": pool_b,
                                             "loadavg_start": start_load, "loadavg_end": loadavg(),
                                             "duration_s": args.duration, "datapath": dp.name}))
    cv = statistics.stdev(pool_a) / statistics.fmean(pool_a)
    effect = 1 - statistics.median(pool_b) / statistics.median(pool_a)
    print(f"A: median {statistics.median(pool_a) / 1e9:.3f} Gbit/s, CV {100 * cv:.1f} %; "
          f"B (tbf aimed at 90 %): median {statistics.median(pool_b) / 1e9:.3f} Gbit/s, "
          f"real slowdown {100 * effect:.1f} %")

    # what one repetition of the full make-report matrix costs on this kernel
    n_dp = sum(1 for d in known.values() if missing(d) is None)
    per_rep = Settings(Params(duration_s=args.duration), reps=1, warmup=0).estimate_s(n_dp) / 60
    budget_reps = max(1, int((BUDGET_MIN - args.fixed_min - per_rep) / per_rep))   # 1 warm-up
    figures = n_dp * 8        # throughput figures: 2 directions x 2 stream counts x 2 families
    print(f"make report bench: {n_dp} datapaths, about {per_rep:.1f} min per repetition of the "
          f"matrix; {BUDGET_MIN:.0f} min budget - {args.fixed_min:g} min outside the bench -> "
          f"at most {budget_reps} repetitions")

    rng = random.Random(args.seed)
    grid = [n for n in (3, 4, 5, 6, 8, 10, 12, 15) if 2 * n <= len(pool_a)]
    print(f"\n{'n':>3} {'false alarms':>13} {'detect tbf':>11} {'detect 10 %':>12}   (gate "
          f"{GATE.metric}:{GATE.pct:g}%, one figure; {args.trials} resampled comparisons each; "
          f"tbf: the measured B pool, a {100 * effect:.0f} % slowdown; 10 %: A's own repetitions "
          "scaled by 0.9)")
    rates = {}
    for n in grid:
        fa = gate_rate(pool_a, None, n, args.trials, rng)
        det = gate_rate(pool_a, pool_b, n, args.trials, rng)
        det10 = gate_rate(pool_a, None, n, args.trials, rng, scale=1 - SLOWDOWN)
        rates[n] = (fa, det, det10)
        ok = fa <= TARGET_FALSE and det10 >= TARGET_DETECT
        print(f"{n:>3} {fa:>13.3f} {det:>11.3f} {det10:>12.3f}   "
              f"{'meets both targets for 10 %' if ok else ''}")
    meeting = [n for n, (fa, _det, det10) in rates.items()
               if fa <= TARGET_FALSE and det10 >= TARGET_DETECT]
    chosen = min(meeting) if meeting else None
    if chosen is not None:
        need = args.fixed_min + per_rep * (chosen + 1)
        fits = "fits" if need <= BUDGET_MIN else "does NOT fit"
        print(f"repetitions needed: {chosen} (one figure), about {need:.1f} min for a whole make "
              f"report ({fits} in {BUDGET_MIN:.0f} min)")
        fam_fa = gate_rate(pool_a, None, chosen, args.trials, rng, family=figures)
        fam_det = gate_rate(pool_a, None, chosen, args.trials, rng, family=figures,
                            scale=1 - SLOWDOWN)
        print(f"gating all {figures} throughput figures together (Holm): false alarms "
              f"{fam_fa:.3f}, detection of 10 % {fam_det:.3f} per figure at n={chosen}")
    else:
        print(f"no n up to {max(grid)} meets false alarms <= {TARGET_FALSE} and detection >= "
              f"{TARGET_DETECT} for a {100 * SLOWDOWN:.0f} % slowdown on this machine now")
    affordable = min(budget_reps, max(grid))
    if chosen is None or chosen > affordable:
        smallest = None
        for pct in (10, 12, 15, 20, 25, 30, 40, 50, 60, 70):
            det = gate_rate(pool_a, None, affordable, args.trials, rng, scale=1 - pct / 100)
            if det >= TARGET_DETECT:
                smallest = pct
                break
        print(f"at the affordable {affordable} repetitions: smallest slowdown detected >= "
              f"{100 * TARGET_DETECT:.0f} % of the time: "
              f"{f'{smallest} %' if smallest else 'more than 70 %'} (A scaled, A's noise)")
    sd_log = statistics.stdev([math.log(v) for v in pool_a])
    need = next((n for n in range(3, 501) if detectable_change(
        sd_log * math.sqrt(2 / n), 2 * n - 2, ALPHA, TARGET_DETECT) <= SLOWDOWN), None)
    if need is None:
        print(f"by the Welch power formula with A's spread (sd of log {sd_log:.3f}): a 10 % "
              "slowdown needs more than 500 repetitions per side for 95 % detection")
    else:
        print(f"by the Welch power formula with A's spread (sd of log {sd_log:.3f}): a 10 % "
              f"slowdown needs about {need} repetitions per side for 95 % detection; "
              f"{per_rep * (need + 1) + args.fixed_min:.0f} min of make report")
    final = chosen if chosen is not None and chosen <= affordable else affordable
    if final not in rates:
        rates[final] = (gate_rate(pool_a, None, final, args.trials, rng),
                        gate_rate(pool_a, pool_b, final, args.trials, rng),
                        gate_rate(pool_a, None, final, args.trials, rng, scale=1 - SLOWDOWN))
    fa, det, det10 = rates[final]
    print(f"repetitions: {final} (make report default); A's CV {100 * cv:.0f} %; loadavg "
          f"{loadavg()}")
    print(f"detection of a 10 % slowdown: {det10:.3f}; of the tbf limit ({100 * effect:.0f} % "
          "slower):")
    print(f"false alarm rate: {fa:.3f}")
    print(f"detection rate: {det:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
