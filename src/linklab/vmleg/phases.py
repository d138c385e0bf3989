"""Where the VM leg's time goes: the guest's main pytest process marks its own phases
(:class:`GuestPhases`), the host adds its start, the boot and the replay (:func:`leg_phases`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from linklab import vm
from linklab.cmd import proc_starttime

PHASES_ENV = "LINKLAB_VM_PHASES"   # the guest's main pytest writes its phases there
# (field, label) in the order they happen; together they make up total_s
PHASES = (("host_s", "host start"), ("boot_s", "boot"), ("import_s", "import"),
          ("collect_s", "collection"), ("cells_s", "cells"), ("end_s", "guest end"),
          ("guest_s", "guest (host clock)"),
          ("replay_s", "replay"))


def process_age_s() -> float:
    """Seconds since this process started (kernel start time against uptime)."""
    ticks = proc_starttime(os.getpid()) or 0
    with open("/proc/uptime") as fh:
        uptime = float(fh.read().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


def read_guest_phases(path: Path) -> dict[str, float]:
    """The guest's phase durations, or {} when it wrote none (it did not get that far)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}


def leg_phases(outcome: vm.Outcome, guest: dict[str, float], host_s: float,
               replay_s: float) -> dict[str, float | str | None]:
    """Every phase of the leg in seconds; ``end_s`` is what the VM run took beyond boot and
    the guest's own phases (guest pytest teardown, poweroff, QEMU exit)."""
    boot = outcome.boot_s
    known = (boot or 0.0) + sum(guest.get(k, 0.0) for k in ("import_s", "collect_s",
                                                             "cells_s"))
    leg: dict[str, float | str | None] = {
        "kernel": outcome.kernel, "virt": outcome.virt, "failure": outcome.failure,
        "host_s": host_s, "boot_s": boot, "import_s": guest.get("import_s"),
        "collect_s": guest.get("collect_s"), "cells_s": guest.get("cells_s"),
        "end_s": outcome.total_s - known if guest else None, "replay_s": replay_s,
        "guest_s": None, "vm_s": outcome.total_s}
    if outcome.virt == vm.ICOUNT_VIRT:
        # the guest's clock counts instructions: its phases are virtual seconds, kept apart
        # (mixed with the host's they gave "guest end -234.6 s"); the host times the guest whole
        leg.update({"import_s": None, "collect_s": None, "cells_s": None, "end_s": None,
                    "guest_s": outcome.total_s - (boot or 0.0), "guest_virtual_s": guest})
    leg["total_s"] = host_s + outcome.total_s + replay_s
    return leg


def phase_summary(leg: dict) -> str:
    """``vm leg: boot 9.5s, import 2.0s, ..., total 140.2s``: the phases that were measured."""
    parts = [f"{label} {leg[key]:.1f}s" for key, label in PHASES
             if key not in ("host_s",) and isinstance(leg.get(key), (int, float))]
    return f"vm leg: {', '.join(parts)}, total {leg['total_s']:.1f}s"


class GuestPhases:
    """In the guest's main pytest process: when Python started, the plugins were loaded,
    the selection was collected (by every xdist worker) and the last cell ended."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        now = time.monotonic()
        self.started = now - process_age_s()
        self.configured = now
        self.collected: float | None = None
        self.cells_done: float | None = None

    def collection_done(self) -> None:
        self.collected = time.monotonic()

    def cells_end(self) -> None:
        self.cells_done = time.monotonic()

    def write(self) -> None:
        out = {"import_s": self.configured - self.started}
        if self.collected is not None:
            out["collect_s"] = self.collected - self.configured
            if self.cells_done is not None:
                out["cells_s"] = self.cells_done - self.collected
        self.path.write_text(json.dumps(out))


PHASES_KEY = pytest.StashKey[GuestPhases]()   # the guest's main session's marks
