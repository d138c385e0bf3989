"""The default namespace before and after: links, addresses, routes, rules, sysctls."""

from __future__ import annotations

import ipaddress
import json
import subprocess

from linklab.drill import SYSCTLS
from linklab.pytest.plugin import host_snapshot
from linklab.suite import in_suite


def host_state() -> dict[str, object]:
    """Default namespace: links, addresses, routes, rules, neighbours, sysctls (stable fields)."""
    state: dict[str, object] = dict(host_snapshot())
    for argv in (["ip", "-j", "-6", "rule", "show"], ["ip", "-j", "neigh", "show"]):
        state[" ".join(argv[2:])] = json.loads(
            subprocess.run(argv, capture_output=True, text=True, check=True).stdout or "[]")
    # neighbour entries on the uplink change by themselves: the gateway's entry ages
    # REACHABLE -> STALE -> DELAY with the host's own traffic (NUD timers) and FAILED entries
    # are garbage-collected and re-created by the host's own attempts. On eth0 only entries for
    # the suite's ranges count (there must be none); elsewhere every entry, state included.
    state["neigh show"] = sorted(
        json.dumps(n, sort_keys=True) for n in state.pop("neigh show")  # type: ignore[union-attr]
        if n.get("dev") != "eth0" or in_suite(ipaddress.ip_address(n["dst"])))
    for key in SYSCTLS:
        with open(f"/proc/sys/{key}") as fh:
            state[f"sysctl {key}"] = fh.read()
    return state


def host_diff(before: dict[str, object], after: dict[str, object]) -> list[str]:
    out = []
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            out.append(k)
    return out
