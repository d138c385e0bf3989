#!/usr/bin/env python3
"""The cost of every datapath on the instruction clock, its determinism and its power.

1. Runs the cost bench (``pytest --vm --vm-clock=instructions -m cost``: QEMU TCG with
   ``-icount shift=0``, one nanosecond of guest time per guest instruction) in BOOTS separate
   boots, each into a results directory of its own, the first with the power experiment
   (``--cost-power POOL``: the veth pair's round trip as it is, and with a known injected cost,
   N non-matching nft rules on c1's input hook, alternating).
2. Prints one line per datapath and path: instructions per byte, packet, round trip, echo and
   connection, each with its coefficient of variation over the repetitions of one boot, then
   each figure's spread across boots.
3. Power of the baseline gate on this clock (``--bench-fail-on '*@tcg-icount:PCT%'``): A/A
   (the injection-free pool split at random into two sets of REPS) gives the false alarm
   rate, A/B (REPS from each) the detection rate of the injected slowdown, judged by the
   report's own test (linklab.bench.compare: Welch on logs). The pools are resampled, so the
   rates estimate what fresh runs would give; they are not counts of independent runs.

Ends with ``icount: N datapaths, max CV X %``, ``false alarm rate: A`` and
``detection rate (2 %): D``.

Usage: sudo .venv/bin/python bench/cost.py [--boots 2] [--pool 8] [--rules 7] [--kernel 6.12]
       [--results DIR ...]   (judge saved runs instead of running)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from linklab.bench.compare import ALPHA, Threshold, judge
from linklab.bench.cost import FROM_REMOTE, ICOUNT_VIRT, METRICS
from linklab.pytest.cost import DEFAULT_POWER_RULES
from linklab.results import RunDir, new_run_id

ROOT = Path(__file__).resolve().parents[1]
GATE_PCT = 1.0            # fail a figure worse by more than this (and beyond the noise)
SLOWDOWN_PCT = 2.0        # the regression the gate must catch
TARGET_FALSE, TARGET_DETECT = 0.05, 0.95
TARGET_CV_PCT = 0.5
WHAT = [m.what for m in METRICS]


def run_boot(run_id: str, kernel: str, extra: list[str]) -> float:
    """One boot's cost bench into results/<run_id>; its wall seconds."""
    argv = [sys.executable, "-m", "pytest", "-q", "-rfEs", "--vm", "--vm-clock=instructions",
            f"--vm-kernel={kernel}", "-m", "cost", "bench/test_cost.py", *extra]
    started = time.monotonic()
    print(f"cost: boot {run_id}: {' '.join(argv[2:])}", flush=True)
    rc = subprocess.run(argv, cwd=ROOT, env=dict(os.environ, LINKLAB_RUN_ID=run_id),
                        check=False).returncode
    if rc not in (0, 1):
        raise SystemExit(f"cost: the cost bench exited {rc}")
    return time.monotonic() - started


def is_release(release: str, spec: str) -> bool:
    """``6.1`` names 6.1.0-57-amd64, not 6.12.118 (as ``--vm-kernel`` reads it)."""
    return not spec or release == spec or release.startswith((spec + ".", spec + "-"))


def figures(run_dir: Path, kernel: str = "") -> dict[tuple[str, str, str], list[float]]:
    """(datapath label, path, what) -> values of one results directory's icount rows (of
    the kernels whose release starts with ``kernel``)."""
    out: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in RunDir(run_dir).rows("bench"):
        if r.get("virt") != ICOUNT_VIRT or r.get("error") or r.get("value") is None \
                or not is_release(str(r.get("kernel")), kernel):
            continue
        flags = [f for f in (r.get("flag") or "").split("+") if f]
        path = "remote" if FROM_REMOTE in flags else "child"
        label = "-".join(p for p in (r["datapath"], r.get("mode") or "",
                                     *(f for f in flags if f != FROM_REMOTE)) if p)
        out[(label, path, r["direction"])].append(float(r["value"]))
    return out


def cv_pct(values: list[float]) -> float:
    return statistics.stdev(values) / statistics.fmean(values) * 100 if len(values) > 1 else 0.0


def gate_rate(pool_a: list[float], pool_b: list[float] | None, n: int, trials: int,
              rng: random.Random) -> float:
    """Share of resampled comparisons the gate fails: A/A when ``pool_b`` is None."""
    gate = Threshold("*", GATE_PCT, virt=ICOUNT_VIRT)
    hits = 0
    for _ in range(trials):
        if pool_b is None:
            both = rng.sample(pool_a, 2 * n)
            base, cur = both[:n], both[n:]
        else:
            base, cur = rng.sample(pool_a, n), rng.sample(pool_b, n)
        (v,) = judge([(cur, base, "instructions_per_round_trip")], alpha=ALPHA)
        hits += gate.fails(v)
    return hits / trials


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boots", type=int, default=2)
    ap.add_argument("--pool", type=int, default=8, help="power pool per side (0: none)")
    ap.add_argument("--rules", type=int, default=DEFAULT_POWER_RULES,
                    help="nft rules injected (power; default %(default)s: about 2 %%)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions a gated run has")
    ap.add_argument("--kernel", default="6.12")
    ap.add_argument("--datapaths", default="", help="--cost-datapaths (default: all)")
    ap.add_argument("--results", type=Path, nargs="*", help="saved runs: judge, do not run")
    ap.add_argument("--trials", type=int, default=2000)
    args = ap.parse_args()

    dirs: list[Path] = list(args.results or [])
    if not dirs:
        base = new_run_id("cost")
        for b in range(1, args.boots + 1):
            extra = [f"--cost-reps={args.reps}"]
            if args.datapaths:
                extra.append(f"--cost-datapaths={args.datapaths}")
            if b == 1 and args.pool:
                extra += [f"--cost-power={args.pool}", f"--cost-power-rules={args.rules}"]
            run_id = f"{base}-boot{b}"
            wall = run_boot(run_id, args.kernel, extra)
            print(f"cost: boot {b}: {wall:.0f} s of wall time", flush=True)
            dirs.append(ROOT / "results" / run_id)

    kernels = sorted({str(r.get("kernel")) for d in dirs for r in RunDir(d).rows("bench")
                      if r.get("virt") == ICOUNT_VIRT})
    if len(kernels) > 1:
        print(f"cost: kernels {', '.join(kernels)} in these runs; this table is {args.kernel}"
              " (--kernel picks another)")
    boots = [figures(d, args.kernel) for d in dirs]
    keys = sorted(set().union(*boots))
    if not keys:
        print("cost: no instruction-clock rows in " + ", ".join(map(str, dirs)))
        return 1
    print(f"\ninstructions per unit of work (mean of boot 1; CV within each boot; spread = "
          f"(max - min) / min of the boots' means); {len(dirs)} boot(s)")
    print(f"{'datapath':26} {'path':6} " + " ".join(f"{w:>24}" for w in WHAT))
    max_cv, max_cross = 0.0, 0.0
    worst = ""
    labels = sorted({(k[0], k[1]) for k in keys})
    for label, path in labels:
        cells = []
        for what in WHAT:
            per_boot = [b.get((label, path, what), []) for b in boots]
            if not per_boot[0]:
                cells.append(f"{'—':>24}")
                continue
            cvs = [cv_pct(v) for v in per_boot if v]
            means = [statistics.fmean(v) for v in per_boot if v]
            cross = (max(means) - min(means)) / min(means) * 100 if len(means) > 1 else 0.0
            if max(cvs) > max_cv:
                max_cv, worst = max(cvs), f"{label} {path} {what}"
            max_cross = max(max_cross, cross)
            cells.append(f"{means[0]:>11.2f} {max(cvs):5.2f}%/{cross:5.2f}%")
        print(f"{label:26} {path:6} " + " ".join(cells))
    print(f"(each cell: mean, max CV within a boot / spread across boots; target CV "
          f"<= {TARGET_CV_PCT:g} %)")
    print(f"largest CV: {max_cv:.3f} % ({worst}); largest spread across boots: "
          f"{max_cross:.3f} %")

    power = sorted(p for d in dirs for p in d.glob("cost-power.*.json"))
    false_rate = detect_rate = float("nan")
    if power:
        data = json.loads(power[0].read_text())
        a, b = data["a"], data["b"]
        slowdown = (statistics.fmean(b) / statistics.fmean(a) - 1) * 100
        rng = random.Random(1)
        n = min(args.reps, len(a) // 2)
        false_rate = gate_rate(a, None, n, args.trials, rng)
        detect_rate = gate_rate(a, b, n, args.trials, rng)
        print(f"\npower ({data['datapath']}, {data['metric']}, pools of {len(a)}): "
              f"{data['rules']} nft rules cost {slowdown:+.2f} % "
              f"({statistics.fmean(a):.0f} -> {statistics.fmean(b):.0f} instructions per "
              f"round trip; CV {cv_pct(a):.3f} % / {cv_pct(b):.3f} %); gate: worse by more "
              f"than {GATE_PCT:g} % beyond the noise, {n} repetitions a side, "
              f"{args.trials} resamples")
        if slowdown < SLOWDOWN_PCT:
            print(f"  note: the injected cost is below {SLOWDOWN_PCT:g} %: raise --rules")
    ndp = len({k[0] for k in keys})
    print(f"icount: {ndp} datapaths, max CV {max_cv:.2f} %")
    print(f"false alarm rate: {false_rate:.3f}")
    print(f"detection rate ({SLOWDOWN_PCT:g} %): {detect_rate:.3f}")
    ok = max_cv <= TARGET_CV_PCT and false_rate <= TARGET_FALSE and detect_rate >= TARGET_DETECT
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
