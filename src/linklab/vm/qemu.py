"""Booting a guest and running one command in it: vng's command line, its output streamed,
QEMU stopped on time, and how the run ended."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from linklab.vm.common import GUEST_PATH, VENV_BIN
from linklab.vm.console import Console
from linklab.vm.host import (
    ICOUNT_OPTS,
    ICOUNT_VIRT,
    TCG_OPTS,
    check_clock,
    check_tools,
    probe_kvm,
)
from linklab.vm.kernels import Kernel
from linklab.vm.procs import Pids, stop
from linklab.vm.script import CACHE_QEMU_OPTS, guest_env, write_script

# Exit statuses of linklab vm itself (the command's own status is passed through).
EXIT_SETUP, EXIT_TIMEOUT, EXIT_GUEST = 2, 124, 125
# Modules udev would load for q35 devices and CPU features the tests never use; each
# costs a modprobe over 9p under TCG (together ~4-7 s of boot).
BLACKLIST = (
    "kvm_amd,kvm_intel,kvm,ccp,irqbypass,sr_mod,cdrom,sg,ahci,libahci,libata,iTCO_wdt,"
    "iTCO_vendor_support,intel_pmc_bxt,lpc_ich,i2c_i801,i2c_smbus,psmouse,serio_raw,evdev,"
    "pcspkr,button,powernow_k8,qemu_fw_cfg,aesni_intel,ghash_clmulni_intel,"
    "crct10dif_pclmul,crc32_pclmul,crc32c_intel,sha1_ssse3,sha256_ssse3,sha512_ssse3"
)
DEFAULT_CPUS = min(2, os.cpu_count() or 1)  # `linklab vm` guest vCPUs
# `pytest --vm` guests side by side: single-threaded TCG uses one host core per guest
DEFAULT_GUESTS = min(2, os.cpu_count() or 1)
TAIL_LINES = 25  # console lines shown when the guest fails
BOOT_ATTEMPTS = 2   # a guest that panics before its command starts is booted once more


@dataclass
class Outcome:
    """How a VM run ended."""

    returncode: int
    kernel: str
    virt: str
    boot_s: float | None
    total_s: float
    failure: str | None = None  # None (the command ran), "panic", "timeout", "qemu",
    #                             "interrupted" (cancelled)
    console_tail: list[str] = field(default_factory=list)

    def summary(self) -> str:
        boot = f"{self.boot_s:.1f}s" if self.boot_s is not None else "n/a"
        return f"vm leg: boot {boot}, total {self.total_s:.1f}s"


def run_once(argv: Sequence[str], *, kernel: Kernel, cpus: int = DEFAULT_CPUS,
             memory: str = "2G", timeout: float = 1800, boot_timeout: float = 180,
             rwdirs: Iterable[Path] = (), env: dict[str, str] | None = None,
             owner: object = None, kvm: bool | None = None, name: str | None = None,
             out: BinaryIO | None = None, err: BinaryIO | None = None,
             cancel: threading.Event | None = None, clock: str = "wall") -> Outcome:
    """One boot of :func:`run`.

    ``clock="instructions"``: TCG with QEMU's instruction counter as the guest clock
    (:data:`ICOUNT_OPTS`), labelled ``tcg-icount``; KVM or more than one vCPU is refused.

    ``owner`` (a :class:`linklab.ownership.Run`) records vng's and QEMU's PIDs and the
    script's directory so ``linklab clean`` can remove them if this process dies. ``cancel``
    set (by another thread: a Ctrl-C while several guests run) stops QEMU within ~0.5 s.
    """
    out = out or sys.stdout.buffer
    err = err or sys.stderr.buffer
    check_clock(clock, cpus, kvm)
    vng = check_tools()
    icount = clock == "instructions"
    use_kvm = False if icount else probe_kvm(kernel) if kvm is None else kvm
    virt = ICOUNT_VIRT if icount else "kvm" if use_kvm else "tcg"
    env_in_guest = guest_env(virt, env)
    if owner is not None:
        scriptdir = Path(owner.tmpdir("vm"))  # type: ignore[attr-defined]
    else:
        scriptdir = Path(tempfile.mkdtemp(prefix="linklab-vm-"))
    script, shared = write_script(scriptdir, argv, env_in_guest, rwdirs, icount)
    if name is None:
        name = f"linklab-{owner.marker}" if owner is not None else "linklab"  # type: ignore[attr-defined]
    vng_argv = _vng_argv(vng, kernel, name, memory, cpus, shared, script, use_kvm, icount)
    vng_env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', GUEST_PATH)}")
    console = Console(time.monotonic())
    proc = subprocess.Popen(vng_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=vng_env, start_new_session=True)
    pids = Pids(owner)
    pids.record(proc.pid)
    try:
        _stream(proc, console, pids, out, err, cancel, timeout, boot_timeout)
    finally:
        _clean_up(proc, pids, scriptdir, owner)
    total = time.monotonic() - console.started
    console.vng_exited(proc.returncode)
    return Outcome(_exit_code(console.failure, console.status), kernel.release, virt,
                   console.boot_s, total, console.failure, list(console.tail))


def run(argv: Sequence[str], *, once: Callable[..., Outcome] = run_once,
        **kw: object) -> Outcome:
    """Boot ``kernel``, run ``argv`` in the current directory, stream its output, wait.

    A panic *before the command started* is retried once (the stock kernel's boot-time text
    patching can trip over an int3 under multi-threaded TCG with 2 vCPUs: ``Oops: int3`` in
    ``sched_clock_cpu``, seen in a fresh-clone CI run); the first console tail is printed.
    A panic once the command runs is the command's outcome and never retried. ``once`` boots
    one guest with ``kw`` (:func:`run_once`; a test gives its own)."""
    err = kw.get("err") or sys.stderr.buffer
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        outcome = once(argv, **kw)
        if outcome.failure != "panic" or outcome.boot_s is not None or attempt == BOOT_ATTEMPTS:
            return outcome
        err.write(("linklab vm: the guest panicked while booting (before the command "  # type: ignore[union-attr]
                   "started); booting it once more. Console tail:\n"
                   + "\n".join(f"  | {line}" for line in outcome.console_tail[-8:])
                   + "\n").encode())
        err.flush()  # type: ignore[union-attr]
    return outcome


def _vng_argv(vng: str, kernel: Kernel, name: str, memory: str, cpus: int, shared: list[Path],
              script: Path, use_kvm: bool, icount: bool) -> list[str]:
    """virtme-ng's command line: the kernel, the shares, the trimmed boot, the guest script."""
    vng_argv = [vng, "--run", str(kernel.image), "--name", name, "--force-9p", "--verbose",
                "--memory", memory, "--cpus", str(cpus), "--qemu-opts=-nodefaults",
                f"--qemu-opts={CACHE_QEMU_OPTS}",
                "--append", "loglevel=4", "--append", f"modprobe.blacklist={BLACKLIST}",
                *[f"--rwdir={d}" for d in shared],
                "--exec", f"/bin/sh {script}"]
    if not use_kvm:
        # one host thread per vCPU (QEMU 7.2's default for x86 on x86, stated so it stays)
        vng_argv[3:3] = ["--disable-kvm", f"--qemu-opts={TCG_OPTS}"]  # after --run IMAGE
    if icount:   # and no address-space randomisation: the same code layout every boot
        vng_argv[3:3] = [f"--qemu-opts={ICOUNT_OPTS}", "--append", "norandmaps"]
    return vng_argv


def _stream(proc: subprocess.Popen, console: Console, pids: Pids, out: BinaryIO,
            err: BinaryIO, cancel: threading.Event | None, timeout: float,
            boot_timeout: float) -> None:
    """Pass vng's output on until it closes both pipes, or until QEMU must be stopped."""
    assert proc.stdout is not None and proc.stderr is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        open_streams = 2
        while open_streams:
            pids.find_qemu(proc.pid)
            if console.must_stop(cancel, timeout, boot_timeout):
                break
            for key, _ in sel.select(timeout=0.5):
                chunk = os.read(key.fileobj.fileno(), 65536)  # type: ignore[union-attr]
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                elif key.data == "out":
                    out.write(chunk)
                    out.flush()
                else:
                    console.feed(chunk, err)
    if console.failure is None and console.pending:
        console.tail.append(console.pending.decode(errors="replace"))


def _clean_up(proc: subprocess.Popen, pids: Pids, scriptdir: Path, owner: object) -> None:
    """Stop QEMU and vng, close their pipes, drop their records and the guest script."""
    stop(proc, pids.recorded)
    for stream in (proc.stdout, proc.stderr):
        stream.close()
    pids.disown()
    for f in scriptdir.iterdir():
        f.unlink()
    scriptdir.rmdir()
    if owner is not None:
        owner.disown_path(str(scriptdir))  # type: ignore[attr-defined]


def _exit_code(failure: str | None, status: int | None) -> int:
    """linklab vm's exit status: the guest command's own, or what stopped it."""
    stopped = {"interrupted": 130, "panic": EXIT_GUEST, "timeout": EXIT_TIMEOUT,
               "qemu": EXIT_GUEST}
    if failure in stopped:
        return stopped[failure]
    return status if status is not None else EXIT_GUEST
