#!/usr/bin/env python3
"""Benchmark of linklab's engine: build + tear down a topology N times with linklab (pyroute2,
in-process) and with the equivalent iproute2 commands (one `ip` process per step, as a shell
script would), in one run. Prints medians per topology and, last, the bridge ratio:

    lifecycle ratio: X      (linklab time / iproute2 time, bridge topology; target <= 0.15)

Usage (root, the venv where linklab is installed):
    sudo .venv/bin/python bench/lifecycle.py [-n N] [scenario names...]
(default: bridge macvlan-bridge)
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import subprocess
import sys
import time
from pathlib import Path

from linklab import kinds
from linklab.build import FORWARDING, NS_SYSCTLS, REMOTE_PORT, build, uplink_port
from linklab.model import Node, Scenario, load_scenario
from linklab.ownership import Run

ROOT = Path(__file__).resolve().parents[1]


def iproute2_steps(sc: Scenario, prefix: str) -> tuple[list[list[str]], list[list[str]]]:
    """The same topology as linklab's builder, as ip commands: (build steps, teardown steps)."""
    ns = {n: f"{prefix}-{n}" for n in ("upstream", "remote", "host",
                                       *[c.name for c in sc.containers])}
    steps: list[list[str]] = []
    fwd = kinds.REGISTRY[sc.kind].HOST_FORWARDS
    for logical, name in ns.items():
        steps.append(["ip", "netns", "add", name])
        sysctls = NS_SYSCTLS | (FORWARDING if logical == "upstream" or
                                (logical == "host" and fwd) else {})
        steps.append(["ip", "netns", "exec", name, "sysctl", "-q", "-w",
                      *[f"{k.replace('/', '.')}={v}" for k, v in sysctls.items()]])
        steps.append(["ip", "-n", name, "link", "set", "lo", "up"])

    def addrs(logical: str, ifname: str, addr_list) -> None:
        for a in addr_list:
            steps.append(["ip", "-n", ns[logical], "addr", "add", str(a), "dev", ifname] +
                         (["nodad"] if a.version == 6 else []))

    def routes(node: Node) -> None:
        for r in node.routes:
            argv = ["ip", "-n", ns[node.name], f"-{r.family}", "route", "add",
                    "default" if r.to == "default" or
                    ipaddress.ip_network(r.to).prefixlen == 0 else r.to]
            argv += ["via", str(r.via)] if r.via else []
            argv += ["dev", r.dev] if r.dev else []
            steps.append(argv)

    mtu = str(sc.mtu)
    up = sc.upstream.ifname
    steps += [["ip", "-n", ns["upstream"], "link", "add", up, "mtu", mtu, "type", "bridge"],
              ["ip", "-n", ns["upstream"], "link", "set", up, "up"]]
    addrs("upstream", up, sc.upstream.addrs)
    steps += [["ip", "-n", ns["host"], "link", "add", sc.host.ifname, "mtu", mtu, "type", "veth",
               "peer", "name", uplink_port("host"), "netns", ns["upstream"], "mtu", mtu],
              ["ip", "-n", ns["host"], "link", "set", sc.host.ifname, "up"],
              ["ip", "-n", ns["upstream"], "link", "set", uplink_port("host"), "master", up,
               "up"]]
    addrs("host", sc.host.ifname, sc.host.addrs)
    steps += [["ip", "-n", ns["remote"], "link", "add", sc.remote.ifname, "type", "veth",
               "peer", "name", REMOTE_PORT, "netns", ns["upstream"]],
              ["ip", "-n", ns["remote"], "link", "set", sc.remote.ifname, "up"],
              ["ip", "-n", ns["upstream"], "link", "set", REMOTE_PORT, "up"]]
    addrs("upstream", REMOTE_PORT, sc.remote_gateway)
    addrs("remote", sc.remote.ifname, sc.remote.addrs)
    if sc.kind == "bridge":
        br = sc.bridge.ifname
        steps += [["ip", "-n", ns["host"], "link", "add", br, "mtu", mtu, "type", "bridge"],
                  ["ip", "-n", ns["host"], "link", "set", br, "up"]]
        addrs("host", br, sc.bridge.addrs)
    for c in sc.containers:
        if sc.kind in ("veth", "bridge"):
            steps += [["ip", "-n", ns[c.name], "link", "add", c.ifname, "mtu", mtu, "type",
                       "veth", "peer", "name", c.peer.ifname, "netns", ns["host"], "mtu", mtu],
                      ["ip", "-n", ns[c.name], "link", "set", c.ifname, "up"]]
            if sc.kind == "bridge":
                steps.append(["ip", "-n", ns["host"], "link", "set", c.peer.ifname, "master",
                              sc.bridge.ifname, "up"])
            else:
                steps.append(["ip", "-n", ns["host"], "link", "set", c.peer.ifname, "up"])
                addrs("host", c.peer.ifname, c.peer.addrs)
        else:
            link = ["type", sc.kind, "mode", sc.mode] + (["bridge" if sc.flag is None else
                                                          sc.flag] if sc.kind == "ipvlan" else [])
            steps += [["ip", "-n", ns["host"], "link", "add", "link", sc.host.ifname, "name",
                       c.ifname, "netns", ns[c.name], *link],
                      ["ip", "-n", ns[c.name], "link", "set", c.ifname, "up"]]
        addrs(c.name, c.ifname, c.addrs)
    for node in (sc.upstream, sc.remote, sc.host, *sc.containers):
        routes(node)
    teardown = [["ip", "netns", "del", name] for name in reversed(ns.values())]
    return steps, teardown


def time_iproute2(sc: Scenario, n: int) -> list[float]:
    times = []
    for i in range(n):
        steps, teardown = iproute2_steps(sc, f"llbench{i}")
        t0 = time.perf_counter()
        try:
            for argv in steps:
                subprocess.run(argv, check=True, capture_output=True)
        finally:
            for argv in teardown:
                subprocess.run(argv, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def time_linklab(sc: Scenario, n: int, run: Run) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with build(sc, run):
            pass
        times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="repetitions per engine (default 20)")
    parser.add_argument("scenarios", nargs="*", default=["bridge", "macvlan-bridge"])
    args = parser.parse_args()
    run = Run()
    ratios = {}
    try:
        for name in args.scenarios:
            sc = load_scenario(ROOT / "scenarios" / f"{name}.toml")
            steps, _ = iproute2_steps(sc, "x")
            time_linklab(sc, 2, run)            # warm imports and caches
            ll = statistics.median(time_linklab(sc, args.n, run))
            ip = statistics.median(time_iproute2(sc, args.n))
            ratios[name] = ll / ip
            print(f"{name:<16} linklab {ll * 1e3:7.1f} ms   iproute2 {ip * 1e3:7.1f} ms "
                  f"({len(steps)} ip commands + {len(sc.containers) + 3} netns del)   "
                  f"ratio {ll / ip:.3f}   (median of {args.n})")
    finally:
        run.close()
    print(f"lifecycle ratio: {ratios.get('bridge', next(iter(ratios.values()))):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
