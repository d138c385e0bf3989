"""vng's and QEMU's processes: found under /proc, recorded with the run's owner, stopped
each by PID, deepest first."""

from __future__ import annotations

import subprocess

from linklab.cmd import proc_starttime, stop_pid


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    """All descendants of ``pid``, deepest first."""
    out: list[int] = []
    for child in _children(pid):
        out.extend(_descendants(child))
        out.append(child)
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


class Pids:
    """vng's and QEMU's PIDs with their start times, each recorded with ``owner`` when seen."""

    def __init__(self, owner: object) -> None:
        self.owner = owner
        self.recorded: dict[int, int | None] = {}

    def record(self, pid: int) -> None:
        if pid not in self.recorded:
            self.recorded[pid] = proc_starttime(pid)
            if self.owner is not None:
                self.owner.own_pid(pid, self.recorded[pid], [_comm(pid)])  # type: ignore[attr-defined]

    def find_qemu(self, vng_pid: int) -> None:
        """Record QEMU once vng has started it."""
        if not any(_comm(p).startswith("qemu") for p in self.recorded):
            for p in _descendants(vng_pid):
                if _comm(p).startswith("qemu"):
                    self.record(p)

    def disown(self) -> None:
        if self.owner is not None:
            for pid in self.recorded:
                self.owner.disown_pid(pid)  # type: ignore[attr-defined]


def stop(proc: subprocess.Popen, recorded: dict[int, int | None]) -> None:
    """Stop QEMU (and so vng), deepest process first, each by PID; wait for vng."""
    if proc.poll() is None:
        for pid in _descendants(proc.pid):
            stop_pid(pid, proc_starttime(pid), grace=2.0)
        stop_pid(proc.pid, recorded.get(proc.pid), grace=2.0)
    proc.wait()
    for pid, start in recorded.items():
        if pid != proc.pid:
            stop_pid(pid, start, grace=1.0)  # a QEMU orphaned by vng dying first
