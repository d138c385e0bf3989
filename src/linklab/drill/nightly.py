"""The nightly's own failures, triggered live on the two VMs (``--nightly``; issue #24).
Placeholder until the section lands: it reports nothing tried."""

from __future__ import annotations

from linklab.drill.runner import Drill

NIGHTLY_FAULTS = ("no address", "ssh cut", "peer agent killed", "libvirtd killed")


def nightly_faults(d: Drill) -> list[dict]:
    """One dict per fault: fault, broke, named, destroyed, seconds, left."""
    d.log("  nightly faults: not built yet")
    return []
