"""The guests run side by side: each guest's pytest command, one thread per guest booting
it (:func:`linklab.vm.run`), their output interleaved line by line with a ``[gN]`` prefix."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import BinaryIO

from linklab import vm
from linklab.ownership import Run
from linklab.vmleg.phases import PHASES_ENV, read_guest_phases
from linklab.vmleg.shard import Guest


def guest_argv(nodeids: list[str], junit: Path, extra: list[str], workers: int, *,
               verbose: int = 0, exitfirst: bool = False) -> list[str]:
    """The guest's pytest command: the selected node ids on ``workers`` xdist workers
    (``loadgroup``: a scenario's cells stay on one worker), results into ``junit``."""
    # --tb=no: the tracebacks travel in the JUnit file and are shown once, by the replay
    return [sys.executable, "-m", "pytest", f"--junitxml={junit}", *extra, "--tb=no", "-rfE",
            *(["-p", "xdist", "-n", str(workers), "--dist", "loadgroup"] if workers > 1 else []),
            *(["-" + "v" * verbose] if verbose > 0 else ["-q"] if verbose < 0 else []),
            *(["-x"] if exitfirst else []), *nodeids]


class _Prefixed:
    """A binary stream that prefixes every line it passes on (one guest's output among
    several); partial lines wait for their newline, a shared lock keeps lines whole."""

    def __init__(self, stream: BinaryIO, prefix: bytes, lock: threading.Lock) -> None:
        self.stream, self.prefix, self.lock, self.pending = stream, prefix, lock, b""

    def write(self, data: bytes) -> int:
        if not self.prefix:
            with self.lock:
                return self.stream.write(data)
        *lines, self.pending = (self.pending + data).split(b"\n")
        if lines:
            with self.lock:
                self.stream.write(b"".join(self.prefix + line + b"\n" for line in lines))
        return len(data)

    def flush(self) -> None:
        with self.lock:
            self.stream.flush()

    def close(self) -> None:
        if self.pending:
            with self.lock:
                self.stream.write(self.prefix + self.pending + b"\n")
                self.stream.flush()
            self.pending = b""


def run_guests(guests: list[Guest], kernel: vm.Kernel, owner: Run, results_root: Path,
               results_args: list[str], verbose: int, exitfirst: bool, timeout: float,
               clock: str = "wall") -> None:
    """Boot every guest at once (one thread each), wait for all; a Ctrl-C stops them all."""
    lock, cancel = threading.Lock(), threading.Event()

    def one(g: Guest) -> None:
        out = _Prefixed(sys.stdout.buffer, g.prefix, lock)
        err = _Prefixed(sys.stderr.buffer, g.prefix, lock)
        argv = guest_argv([item.nodeid for item in g.items], g.junit, results_args, g.workers,
                          verbose=verbose, exitfirst=exitfirst)
        name = f"linklab-{owner.marker}-g{g.index}"
        try:
            g.outcome = vm.run(argv, kernel=kernel, cpus=g.workers, timeout=timeout,
                               rwdirs=[results_root], owner=owner, name=name,
                               env={PHASES_ENV: str(g.phases),
                                    "LINKLAB_VM_GUEST": f"g{g.index}" if len(guests) > 1 else ""},
                               out=out, err=err, cancel=cancel, clock=clock)
        except BaseException as exc:  # handed to the main thread, as this guest's outcome
            g.outcome = vm.Outcome(vm.EXIT_SETUP, kernel.release, "n/a", None, 0.0, "setup",
                                   [f"{type(exc).__name__}: {exc}"])
        finally:
            out.close()
            err.close()
        g.guest_phases = read_guest_phases(g.phases)

    threads = [threading.Thread(target=one, args=(g,), name=f"linklab-vm-g{g.index}")
               for g in guests]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.5)
    except KeyboardInterrupt:
        cancel.set()
        for t in threads:
            t.join()
        raise
