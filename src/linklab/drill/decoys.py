"""Decoys: an unrecorded look-alike namespace, process and temp dir that must survive."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

from linklab.cmd import stop_pid
from linklab.drill import NETNS
from linklab.drill.observe import processes


@dataclass
class Decoys:
    """Objects that look like linklab's but were never recorded: they must survive a clean."""

    namespaces: list[str]
    pid: int
    pid_start: int
    tmp: str
    proc: subprocess.Popen

    @classmethod
    def make(cls, marker: str) -> Decoys:
        other = secrets.token_hex(2)
        names = [f"ll{marker}-c7", f"ll{other}-c1"]
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            subprocess.run(["ip", "-n", name, "link", "add", f"ll{marker}-c1", "type", "veth",
                            "peer", "name", "eth0"], check=True)
        proc = subprocess.Popen(["nsenter", f"--net={NETNS}/{names[0]}", "--", "sleep", "300"],
                                start_new_session=True)
        tmp = tempfile.mkdtemp(prefix=f"linklab-{marker}-decoy-")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.pid not in processes():
            time.sleep(0.01)          # until the decoy is visible in /proc
        start = processes()[proc.pid].start
        return cls(names, proc.pid, start, tmp, proc)

    def excluded(self) -> set[object]:
        return {*self.namespaces, self.pid, self.tmp}

    def preserved(self) -> tuple[int, int]:
        """(decoys still present, decoys made)."""
        alive = processes().get(self.pid)
        ok = sum(os.path.exists(f"{NETNS}/{n}") and
                 bool(subprocess.run(["ip", "-n", n, "-j", "link", "show", "eth0"],
                                     capture_output=True, check=False).stdout)
                 for n in self.namespaces)
        ok += int(alive is not None and alive.start == self.pid_start)
        ok += int(os.path.isdir(self.tmp))
        return ok, len(self.namespaces) + 2

    def remove(self) -> None:
        stop_pid(self.pid, self.pid_start, grace=1.0)
        self.proc.wait()
        for n in self.namespaces:
            subprocess.run(["ip", "netns", "del", n], check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)
