#!/usr/bin/env python3
"""How linklab scales with the number of containers: build, check all pairs and tear down a
scenario of N containers (a veth pair each, routed by the host; IPv4; [pairs] with the given
probes), for each N, and print the times, the cost per container and per pair, and whether growth
is linear (the log-log slope between the smallest and the largest N: 1.0 is linear, 2.0 square).

Build and teardown are expected to grow with the containers, the check with the pairs
(N x (N + 2) per probe): a slope above ~1.2 against its own measure of size is reported as
growing faster than it should.

Usage (root, the venv where linklab is installed):
    sudo .venv/bin/python bench/scale.py [-n 10 50 250] [--probes icmp tcp:80] [--write DIR]
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import resource
import sys
import time
from pathlib import Path

from linklab.build import start
from linklab.checks import cells
from linklab.model import SHIPPED, Scenario, load_text
from linklab.ownership import Run
from linklab.probes import Observer

NET = ipaddress.ip_network("198.18.64.0/20")    # a /31 per container: room past MAX_CONTAINERS
LINEAR = 1.2      # a log-log slope above this grows faster than linear


def scale_scenario(n: int, probes: list[str], name: str | None = None) -> str:
    """The TOML of a scenario with ``n`` containers, each on its own veth pair routed by the
    host (a /31 per pair, as Calico and Cilium lay pods out), [pairs] over ``probes``.

    Routed, not one L2 subnet: a container's neighbour table then holds one entry (its
    gateway) instead of one per other container. The kernel's neighbour table is one for all
    namespaces (net.ipv4.neigh.default.gc_thresh3, 1024 by default, entries younger than 5 s
    never reclaimed), so all pairs of 250 containers on one bridge subnet fail with ENOBUFS
    (62 000 entries at once); on a bridge with /32s, the host's ICMP redirects teach the
    containers each other's MAC and bring the same overflow back."""
    addrs = list(NET)
    lan = ipaddress.ip_network("198.19.64.0/24")   # host <-> router
    text = f"""name = "{name or f"scale-{n}"}"
kind = "veth"
mtu = 1500
description = "{n} containers, each on a veth pair routed by the host (bench/scale.py)"

[host]
ifname = "eth0"
addrs = ["{lan[2]}/24"]
routes = [{{ to = "default", via = "{lan[1]}" }}]

[upstream]
ifname = "lan0"
addrs = ["{lan[1]}/24"]
routes = [{{ to = "{NET}", via = "{lan[2]}" }}]

[remote]
ifname = "eth0"
addrs = ["198.19.70.2/24"]
gateway = ["198.19.70.1/24"]
routes = [{{ to = "default", via = "198.19.70.1" }}]

[pairs]
probes = [{", ".join(f'"{p}"' for p in probes)}]
families = ["v4"]
containers = "pass"
host = "pass"
gateway = "pass"
remote = "pass"
why = "routed by the host: every container reaches every other, its host and the LAN"
"""
    for i in range(1, n + 1):
        gw, mine = addrs[2 * i], addrs[2 * i + 1]
        text += f"""
[[container]]
name = "c{i}"
ifname = "eth0"
addrs = ["{mine}/31"]
routes = [{{ to = "default", via = "{gw}" }}]
peer = {{ ifname = "v{i}", addrs = ["{gw}/31"] }}
"""
    expect = (SHIPPED / "veth.toml").read_text().split("\n[expect]\n")[1]
    return text + "\n[expect]\n" + expect


def measure(sc: Scenario) -> dict[str, float]:
    """Build, observe every cell of ``sc`` (its [pairs] truth tables and the fixed checks),
    tear down; seconds of each, and the pairs that did not do as expected."""
    todo = [c for c in cells(sc) if c.check not in ("host-netfilter", "second-child")]
    pairs = sum(len(c.flows) for c in todo if c.table)
    run = Run()
    try:
        t0 = time.monotonic()
        topo, resources = start(sc, run)
        t1 = time.monotonic()
        try:
            obs = Observer(topo, todo)
            wrong = []
            for c in todo:
                if c.table:
                    wrong += [f"{fc.flow.name}: {o.result} ({o.detail})"
                              for fc, o in obs.flows(c) if o.result != fc.expected]
                else:
                    obs.observe(c)
            t2 = time.monotonic()
        finally:
            resources.close()
        t3 = time.monotonic()
    finally:
        run.close()
    return {"containers": len(sc.containers), "pairs": pairs, "build_s": t1 - t0,
            "check_s": t2 - t1, "teardown_s": t3 - t2, "mismatched": len(wrong), "wrong": wrong,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def slope(rows: list[dict[str, float]], x: str, y: str) -> float:
    """The log-log slope of ``y`` against ``x`` between the first and the last row."""
    a, b = rows[0], rows[-1]
    if a[x] == b[x] or a[y] <= 0 or b[y] <= 0:
        return float("nan")
    return math.log(b[y] / a[y]) / math.log(b[x] / a[x])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, nargs="+", default=[10, 50, 250],
                        help="container counts (default: 10 50 250)")
    parser.add_argument("--probes", nargs="+", default=["icmp"],
                        help="[pairs] probes (default: icmp)")
    parser.add_argument("--write", type=Path, metavar="DIR",
                        help="also write each scenario to DIR/scale-N.toml (for pytest "
                             "--scenarios=DIR)")
    args = parser.parse_args(argv)
    rows = []
    print(f"{'containers':>10} {'pairs':>7} {'build s':>8} {'check s':>8} {'teardown s':>10} "
          f"{'ms/container':>12} {'us/pair':>8} {'mismatched':>10} {'max RSS MB':>10}")
    for n in sorted(args.n):
        text = scale_scenario(n, args.probes)
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / f"scale-{n}.toml").write_text(text)
        sc = load_text(text, f"<scale-{n}>")
        r = measure(sc)
        rows.append(r)
        per_c = 1000 * (r["build_s"] + r["teardown_s"]) / n
        per_p = 1e6 * r["check_s"] / max(1, r["pairs"])
        print(f"{n:>10} {r['pairs']:>7} {r['build_s']:>8.2f} {r['check_s']:>8.2f} "
              f"{r['teardown_s']:>10.2f} {per_c:>12.2f} {per_p:>8.1f} {r['mismatched']:>10} "
              f"{r['maxrss_mb']:>10.0f}",
              flush=True)
        for line in r["wrong"][:10]:
            print(f"  mismatch: {line}")
    if len(rows) > 1:
        print("growth (log-log slope, smallest to largest; 1.0 = linear):")
        for what, x in (("build_s", "containers"), ("teardown_s", "containers"),
                        ("check_s", "pairs")):
            k = slope(rows, x, what)
            verdict = "linear" if k <= LINEAR else "FASTER than linear"
            print(f"  {what:<11} vs {x:<10} {k:5.2f}  {verdict}")
    return 1 if any(r["mismatched"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
