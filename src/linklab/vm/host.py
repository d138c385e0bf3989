"""What the host must have for a guest: QEMU, a static busybox, virtme-ng, KVM or TCG,
and a clock the guest can be given."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

from linklab.cmd import MissingTool, require, stop_pid
from linklab.vm.common import VENV_BIN, VMError
from linklab.vm.kernels import Kernel

KVM_PROBE_CACHE = Path("/run/linklab/kvm-probe.json")
# Single-threaded TCG: with one host thread per vCPU (thread=multi, QEMU 7.2's default for x86)
# two busy workers made the guest kernel trip over its own live text patching (text_poke_bp's
# int3): "Oops: int3" in __schedule / sched_clock_cpu, a panic in 2 of 2 fresh-clone CI runs.
# The two vCPUs still let the two workers overlap their waits.
TCG_OPTS = "-accel tcg,thread=single"
# The instruction clock (--clock instructions): the guest's clock advances 1 ns per executed
# guest instruction (shift=0), idle time is skipped rather than slept (sleep=off), the RTC
# follows the guest clock, and RDRAND/the guest's randomness come from a seeded generator.
# icount works with single-threaded TCG only.
CLOCKS = ("wall", "instructions")
ICOUNT = "shift=0,sleep=off,align=off"
ICOUNT_SEED = 1
ICOUNT_OPTS = f"-icount {ICOUNT} -rtc clock=vm -seed {ICOUNT_SEED}"
ICOUNT_VIRT = "tcg-icount"


def _is_static(path: str) -> bool:
    """True when the ELF file ``path`` has no program interpreter (statically linked)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return False
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        fh.seek(phoff)
        table = fh.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def check_clock(clock: str, cpus: int, kvm: bool | None) -> None:
    """Refuse a combination the instruction clock cannot honour, saying which and why."""
    if clock not in CLOCKS:
        raise VMError(f"clock {clock!r}: use one of {', '.join(CLOCKS)}")
    if clock != "instructions":
        return
    if kvm:
        raise VMError("the instruction clock (QEMU -icount) needs TCG: it cannot run under "
                      "KVM (drop the KVM request, or use --clock wall)")
    if cpus != 1:
        raise VMError(f"the instruction clock (QEMU -icount) needs single-threaded TCG with "
                      f"one vCPU per guest: {cpus} vCPUs asked (use 1 vCPU, or --clock wall)")


def qemu_version() -> str:
    """``QEMU emulator version 7.2.22 (...)``'s version, or "" when it cannot be read."""
    try:
        out = subprocess.run([require("qemu-system-x86_64", "qemu-system-x86"), "--version"],
                             check=False, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired, MissingTool):
        return ""
    m = re.search(r"version (\S+)", out)
    return m.group(1) if m else ""


def check_tools() -> str:
    """Path of vng after checking QEMU, a static busybox and virtme-ng are installed."""
    require("qemu-system-x86_64", "qemu-system-x86")
    busybox = require("busybox", "busybox-static")
    if not _is_static(os.path.realpath(busybox)):
        raise MissingTool(f"{busybox} is dynamically linked; virtme-ng's initramfs needs the "
                          "Debian package busybox-static (run `make setup`)")
    vng = VENV_BIN / "vng"
    if not vng.exists():
        raise MissingTool(f"virtme-ng (vng) is not installed in {sys.prefix}; run `make setup`")
    return str(vng)


def probe_kvm(kernel: Kernel, timeout: float = 8.0) -> bool:
    """Whether QEMU can run this kernel under KVM here (boot to the no-root panic).

    Some hosts expose /dev/kvm but only run special guests (QEMU asserts on MSR 0x10a or
    hangs), so a real boot is tried once and the answer is cached under /run.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    qemu = require("qemu-system-x86_64", "qemu-system-x86")
    key = hashlib.sha256(f"{qemu}:{os.stat(qemu).st_mtime_ns}:{kernel.image}".encode()).hexdigest()
    try:
        cached = json.loads(KVM_PROBE_CACHE.read_text())
        if cached.get("key") == key:
            return bool(cached["kvm"])
    except (OSError, ValueError, KeyError):
        pass
    argv = [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256M", "-nodefaults", "-display",
            "none", "-no-reboot", "-serial", "stdio", "-kernel", str(kernel.image),
            "-append", "console=ttyS0 panic=-1 loglevel=1"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        ok = b"Kernel panic" in out
    except subprocess.TimeoutExpired:
        stop_pid(proc.pid, grace=1.0)
        proc.wait()
        ok = False
    try:
        KVM_PROBE_CACHE.parent.mkdir(parents=True, exist_ok=True)
        KVM_PROBE_CACHE.write_text(json.dumps({"key": key, "kvm": ok}))
    except OSError:
        pass
    return ok
