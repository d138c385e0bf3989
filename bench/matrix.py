#!/usr/bin/env python3
"""Throughput of the reachability matrix: runs `pytest -m connectivity` on the matrix
(tests/live/test_connectivity.py) and prints how many cells it executed per second of wall time.

    matrix: 190 cells executed (190 passed, 0 failed), 265 skipped (kernel lacks ...), 5.9 s
    matrix rate: 32.2 checks/s      (target >= 30 on a 2-core machine)

Usage: bench/matrix.py [-n WORKERS] [extra pytest args]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=0, help="pytest-xdist workers (default: none)")
    args, extra = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="linklab-matrix-") as tmp:
        junit = Path(tmp) / "junit.xml"
        argv = [sys.executable, "-m", "pytest", "-q", "-m", "connectivity",
                "tests/live/test_connectivity.py", f"--junitxml={junit}", f"--results-dir={tmp}",
                *(["-p", "xdist", "-n", str(args.n), "--dist", "loadgroup"] if args.n else []),
                *extra]
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if not junit.exists():
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            return 2
        suite = ET.parse(junit).getroot()
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        tests, skipped = int(suite.get("tests", 0)), int(suite.get("skipped", 0))
        failed = int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    executed = tests - skipped
    print(f"matrix: {executed} cells executed ({executed - failed} passed, {failed} failed), "
          f"{skipped} skipped, {wall:.1f} s wall (pytest included)")
    print(f"matrix rate: {executed / wall:.1f} checks/s")
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
