"""The selection split across guests booted side by side: a scenario's cells stay on one
guest, the parts are balanced by the last leg's durations on that kernel."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from linklab import vm
from linklab.vmleg.junit import junit_key, read_junit


class Guest:
    """One guest of the leg: its share of the items, its files in the run directory, its
    outcome. Shard files are named ``vm-shard-*`` so nothing reads them as results."""

    def __init__(self, index: int, count: int, items: list[pytest.Item], rundir: Path,
                 release: str, cpus: int) -> None:
        self.index, self.items = index, items
        self.label = f"[guest {index}] " if count > 1 else ""
        self.prefix = f"[g{index}] ".encode() if count > 1 else b""
        self.junit = rundir / (f"vm-shard-{release}-{index}.xml" if count > 1
                               else f"junit-vm-{release}.xml")
        self.phases = rundir / f"vm-shard-{release}-{index}.json"
        self.workers = min(cpus, len(items))
        self.outcome: vm.Outcome | None = None
        self.guest_phases: dict[str, float] = {}


def group_key(item: pytest.Item) -> str:
    """Items that must share a guest: a scenario's cells (its ``xdist_group``, one topology
    per module-scoped fixture); any other test stands alone."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return f"{item.nodeid.split('::')[0]}@{mark.args[0] if mark.args else mark.kwargs}"
    return item.nodeid


def previous_durations(results_root: Path, release: str, skip: Path) -> dict[str, float]:
    """Each test's seconds in the newest earlier VM leg on ``release`` under ``results_root``
    (setup, call and teardown), or {} when there is none."""
    runs = sorted((p for p in results_root.glob(f"*/junit-vm-{release}.xml")
                   if p.parent != skip), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in runs:
        try:
            return {key: float(case.get("time", 0)) for key, case in read_junit(path).items()}
        except (ET.ParseError, OSError, ValueError):
            continue
    return {}


# Guest seconds per test under TCG when no earlier leg says better (bench/vm_leg.py on 6.12,
# one vCPU: 48 DHCP cells 215-260 s, 255 matrix cells in 13 scenarios 46 s): a DHCP cell
# starts a server and clients of its own; a matrix cell shares its scenario's topology and
# batch; an anatomy test traces a datapath's cells.
DEFAULT_WEIGHTS = (("test_dhcp.py::", 5.0), ("test_anatomy.py::", 3.0), ("", 0.2))


def item_weights(items: list[pytest.Item], durations: dict[str, float]) -> dict[str, float]:
    """Each item's expected guest seconds: its last duration, else the default by kind."""
    out = {}
    for item in items:
        known = durations.get(junit_key(item.nodeid))
        out[item.nodeid] = known if known is not None else next(
            w for prefix, w in DEFAULT_WEIGHTS if prefix in item.nodeid)
    return out


def shard(items: list[pytest.Item], n: int, weights: dict[str, float]) -> list[list[pytest.Item]]:
    """``items`` in at most ``n`` parts of about equal weight (heaviest group first onto the
    lightest part); a group stays whole and every part keeps the collection order."""
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        groups.setdefault(group_key(item), []).append(item)
    parts: list[list[pytest.Item]] = [[] for _ in range(max(1, min(n, len(groups))))]
    loads = [0.0] * len(parts)
    for members in sorted(groups.values(), key=lambda g: -sum(weights[i.nodeid] for i in g)):
        lightest = loads.index(min(loads))
        parts[lightest].extend(members)
        loads[lightest] += sum(weights[i.nodeid] for i in members)
    order = {item.nodeid: n for n, item in enumerate(items)}
    return [sorted(part, key=lambda i: order[i.nodeid]) for part in parts if part]


def make_guests(items: list[pytest.Item], n: int, results_root: Path, rundir: Path,
                release: str, cpus: int) -> list[Guest]:
    """At most ``n`` guests sharing ``items``, weighed by the newest earlier leg's durations."""
    weights = item_weights(items, previous_durations(results_root, release, rundir))
    parts = shard(items, n, weights)
    return [Guest(i, len(parts), part, rundir, release, cpus) for i, part in enumerate(parts)]
