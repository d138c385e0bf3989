"""The guest's console (vng's stderr), read line by line while QEMU runs."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import BinaryIO

from linklab.vm.script import END, START

PANIC = re.compile(r"Kernel panic - not syncing|sysrq: Trigger a crash")


@dataclass
class Console:
    """What the guest's console (vng's stderr) has said: the boot's end, the command's status,
    a panic, the last lines; and why QEMU was stopped, if it was."""

    started: float
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    boot_s: float | None = None
    status: int | None = None
    failure: str | None = None
    pending: bytes = b""

    def feed(self, chunk: bytes, err: BinaryIO) -> None:
        """Read whole lines; pass on the command's own stderr between the markers."""
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip("\r")
            if self.boot_s is None and line == START:
                self.boot_s = time.monotonic() - self.started
                continue
            if line.startswith(END) and line[len(END):].isdigit():
                self.status = int(line[len(END):])
                continue
            if PANIC.search(line):
                self.failure = "panic"
            self.tail.append(line)
            if self.boot_s is not None and self.status is None:
                err.write(raw + b"\n")
                err.flush()

    def must_stop(self, cancel: threading.Event | None, timeout: float,
                  boot_timeout: float) -> bool:
        """Whether QEMU is to be stopped now (cancelled, or past its time); the tail says why."""
        if cancel is not None and cancel.is_set():
            self.failure = "interrupted"
            self.tail.append("linklab vm: interrupted; stopping QEMU")
            return True
        elapsed = time.monotonic() - self.started
        if elapsed > timeout or (self.boot_s is None and elapsed > boot_timeout):
            self.failure = "timeout"
            what = "the guest command" if self.boot_s is not None else "the guest boot"
            self.tail.append(f"linklab vm: {what} did not finish within "
                             f"{timeout if self.boot_s is not None else boot_timeout:g}s; "
                             "stopping QEMU")
            return True
        return False

    def vng_exited(self, returncode: int | None) -> None:
        """vng is gone: without a status from the guest command, QEMU ended early."""
        if self.failure is None and self.status is None:
            self.failure = "qemu"
            self.tail.append(f"linklab vm: QEMU exited (vng status {returncode}) before the "
                             "guest command finished")
