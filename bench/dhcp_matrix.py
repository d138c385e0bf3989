#!/usr/bin/env python3
"""Speed of the DHCP client-id matrix on this kernel: every runnable cell of
scenarios/dhcp/matrix.toml (build, fresh server, both clients, lease records, teardown).
Prints per cell the outcome, the server start (spawn -> UDP 67 bound) and the slowest
client's lease time, then the medians and, last, the totals against the targets:

    dhcp lease: median X s (target < 1 s)   dhcp matrix: Y s for N cells (target <= 30 s)

Usage (root, the venv where linklab is installed):
    sudo .venv/bin/python bench/dhcp_matrix.py [-k SUBSTRING]
(exit 1 when a cell disagrees with the table or a target is missed)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from linklab.build import build
from linklab.capabilities import missing_link
from linklab.dhcp.cell import run_cell
from linklab.dhcp.matrix import MATRIX_FILE, load_matrix
from linklab.model import load_scenario
from linklab.ownership import Run

ROOT = Path(__file__).resolve().parents[1]

LEASE_TARGET_S = 1.0
MATRIX_TARGET_S = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only cells whose id contains this")
    args = parser.parse_args()
    scenarios = {sc.name: sc for sc in map(load_scenario,
                                           sorted((ROOT / "scenarios").glob("dhcp-*.toml")))}
    cells = [c for c in load_matrix(MATRIX_FILE, scenarios) if args.k in c.id]
    run = Run()
    leases, starts, wrong, ran = [], [], 0, 0
    t0 = time.monotonic()
    try:
        for cell in cells:
            sc = cell.scenario
            if why := missing_link(sc.kind, sc.mode, sc.flag):
                print(f"{cell.id:<62} skipped: {why}")
                continue
            t = time.monotonic()
            with build(sc, run) as topo:
                seen = run_cell(cell, topo, run)
            ran += 1
            ok = (seen.lease, seen.stored) == (cell.expected.lease, cell.expected.stored)
            wrong += not ok
            starts.append(seen.server_start_s)
            if seen.lease_s:
                leases.append(seen.lease_s)
            print(f"{cell.id:<62} {seen.lease:<9} [{' '.join(seen.stored)}]"
                  f"{'' if ok else ' (table says ' + cell.expected.lease + ')'}  "
                  f"server_start_s={seen.server_start_s:.3f} lease_s={seen.lease_s:.3f} "
                  f"cell_s={time.monotonic() - t:.3f}")
    finally:
        run.close()
    total = time.monotonic() - t0
    if not ran:
        print("no runnable cell")
        return 1
    med = statistics.median(leases) if leases else 0.0
    print(f"server start: median {statistics.median(starts):.3f} s, max {max(starts):.3f} s")
    print(f"dhcp lease: median {med:.3f} s, max {max(leases, default=0):.3f} s "
          f"(target < {LEASE_TARGET_S:g} s)   dhcp matrix: {total:.1f} s for {ran} cells "
          f"(target <= {MATRIX_TARGET_S:g} s, ratio {total / MATRIX_TARGET_S:.2f})")
    return 1 if wrong or med >= LEASE_TARGET_S or total > MATRIX_TARGET_S else 0


if __name__ == "__main__":
    sys.exit(main())
