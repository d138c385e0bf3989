"""VM leg figures: where the time of ``make test``'s VM leg goes, phase by phase.

    .venv/bin/python bench/vm_leg.py [--kernel RELEASE] [--cpus N] [-k SELECTION] [-m MARKERS]

Runs the leg exactly as ``make test`` does (``pytest -rfEs --vm -m connectivity -k ipvlan``)
into a scratch results directory, then prints each phase from the leg's
``vm-leg-<release>.json`` (host start, boot, guest import, collection, cells, guest end,
replay), the CPU seconds the leg used on the host (QEMU's vCPU threads included) and the load
average before and after, and ends with

    vm leg: <N> cells in <S> s (<S/target> of target 150 s)

Under TCG the wall time scales with host CPU contention (the machine may be shared), so the
load average and CPU seconds are printed next to it. Exit status: the leg's own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from linklab import vm
from linklab.pytest.vm import PHASES

TARGET_S = 150.0
REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default=None, help="kernel release (default: the leg's)")
    parser.add_argument("--guests", type=int, default=vm.DEFAULT_GUESTS,
                        help="guests side by side (default: %(default)s)")
    parser.add_argument("--cpus", type=int, default=1,
                        help="vCPUs and xdist workers per guest (default: %(default)s)")
    parser.add_argument("--cells-ahead", type=int, default=None,
                        help="DHCP cells in flight per guest (default: the leg's, 3)")
    parser.add_argument("-k", dest="select", default="ipvlan and not cni",
                        help="-k selection (default: %(default)s, the 303 cells of issue #12)")
    parser.add_argument("-m", dest="markers", default="connectivity", help="-m (connectivity)")
    args = parser.parse_args()
    kernel = vm.find_kernel(args.kernel)
    run_id = f"vmleg-{secrets.token_hex(3)}"
    scratch = Path(tempfile.mkdtemp(prefix="linklab-vmleg-"))
    argv = [sys.executable, "-m", "pytest", "-q", "-rfEs", "--vm", "--vm-kernel",
            kernel.release, f"--vm-guests={args.guests}",
            f"--vm-cpus={args.cpus}", "-m", args.markers, "-k", args.select,
            f"--results-dir={scratch}", f"--run-id={run_id}",
            *([f"--cells-ahead={args.cells_ahead}"] if args.cells_ahead else [])]
    env = {k: v for k, v in os.environ.items() if k != "LINKLAB_RUN_ID"}
    load_before = os.getloadavg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, env=env, check=False, capture_output=True, text=True)
    wall_s = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_after = os.getloadavg()
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    leg_file = scratch / run_id / f"vm-leg-{kernel.release}.json"
    try:
        leg = json.loads(leg_file.read_text())
    except (OSError, ValueError):
        print(done.stdout[-3000:] + done.stderr[-2000:])
        print(f"vm_leg: the leg wrote no {leg_file.name} (exit {done.returncode}); its "
              f"results stay in {scratch}")
        return done.returncode or 1
    failed = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    profile(scratch / run_id / f"junit-vm-{kernel.release}.xml")
    if done.returncode == 0:
        shutil.rmtree(scratch)
    else:  # what failed, and the rows and JUnit to look at
        print("\n".join(failed[:40]) + f"\nvm_leg: results kept in {scratch / run_id}")
    tail = [line for line in done.stdout.splitlines() if line.strip()][-1:]
    print(f"kernel={leg['kernel']} virt={leg['virt']} guests={leg.get('guests', 1)} "
          f"cpus={leg['cpus']} workers={leg['workers']} exit={done.returncode} "
          f"({' '.join(tail)})")
    guests = leg.get("per_guest") or [leg]
    print(f"  {'phase':<11} " + " ".join(f"{f'guest {i}':>9}" for i in range(len(guests))))
    for key, label in PHASES:
        shown = [f"{g[key]:7.1f} s" if isinstance(g.get(key), (int, float)) else "      n/a"
                 for g in guests]
        print(f"  {label:<11} {' '.join(shown)}")
    print(f"  {'tests':<11} " + " ".join(f"{g['cells']:9d}" for g in guests))
    print(f"  {'total':<11} {wall_s:7.1f} s  (leg's own total_s {leg['total_s']:.1f})")
    print(f"cpu_s={cpu_s:.1f} (host CPU of the leg, QEMU included; cpu_s/wall_s="
          f"{cpu_s / wall_s:.2f}) load_1min before={load_before[0]:.2f} "
          f"after={load_after[0]:.2f} load_5min before={load_before[1]:.2f} "
          f"after={load_after[1]:.2f}")
    print(f"vm leg: {leg['cells']} cells in {wall_s:.1f} s ({wall_s / TARGET_S:.2f} of target "
          f"{TARGET_S:g} s)")
    return done.returncode


def profile(junit: Path, top: int = 8) -> None:
    """Guest seconds per test module and the slowest tests (setup, call and teardown), from
    the leg's merged JUnit file."""
    import xml.etree.ElementTree as ET
    from collections import Counter

    try:
        cases = list(ET.parse(junit).getroot().iter("testcase"))
    except (OSError, ET.ParseError):
        return
    by_module: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for case in cases:
        by_module[case.get("classname", "")] += float(case.get("time", 0))
        count[case.get("classname", "")] += 1
    print("guest seconds by module (tests):")
    for module, seconds in by_module.most_common():
        print(f"  {module:<40} {seconds:7.1f} s ({count[module]})")
    slowest = sorted(cases, key=lambda c: -float(c.get("time", 0)))[:top]
    print("slowest tests:")
    for case in slowest:
        print(f"  {float(case.get('time', 0)):6.1f} s  {case.get('name')}")


if __name__ == "__main__":
    sys.exit(main())
