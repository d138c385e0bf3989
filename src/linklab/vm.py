"""``linklab vm``: run a command on a stock distro kernel under QEMU (virtme-ng).

The host's root filesystem is shared read-only into the guest (9p), the command runs in
the same working directory with the same virtualenv, its output streams live, and files
written under the repository's ``results/`` come back (a read-write 9p share).

The boot is trimmed for TCG: ``-nodefaults`` drops the default CD-ROM and NIC, and the
modules udev would load for emulated hardware nobody uses (AHCI, KVM, watchdogs, crypto
accelerators) are blacklisted on the kernel command line; the guest command starts ~8 s
after QEMU instead of ~15 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import selectors
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from linklab.cmd import MissingTool, proc_starttime, require, stop_pid

BOOT = Path("/boot")
MODULES = Path("/lib/modules")
REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.prefix) / "bin"
START = "linklab-vm: guest command starting"
END = "linklab-vm: guest command exited "
# A second read-only 9p export of / mounted with the page cache on (see guest_script).
CACHE_TAG, CACHE_DIR = "linklabroot", "/run/linklab-cached"
CACHE_OPTS = "ro,trans=virtio,version=9p2000.L,msize=524288,cache=loose"
CACHE_QEMU_OPTS = (f"-fsdev local,id={CACHE_TAG},path=/,security_model=none,readonly=on,"
                   f"multidevs=remap -device virtio-9p-pci,fsdev={CACHE_TAG},"
                   f"mount_tag={CACHE_TAG}")
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
HOST_CACHE = Path("/var/cache/linklab")   # compiled helpers, seen read-only by the guests
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
KVM_PROBE_CACHE = Path("/run/linklab/kvm-probe.json")
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
PANIC = re.compile(r"Kernel panic - not syncing|sysrq: Trigger a crash")


class VMError(RuntimeError):
    """The VM leg cannot start; the message says what to install or change."""


@dataclass(frozen=True)
class Kernel:
    """An installed distro kernel: its image and whether its modules include ipvlan."""

    release: str
    image: Path
    has_ipvlan: bool


def release_key(release: str) -> tuple:
    """Sort key ordering kernel releases numerically (6.12 after 6.1)."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", release) if p)


def list_kernels(boot: Path = BOOT, modules: Path = MODULES) -> list[Kernel]:
    """Kernels with an image in ``boot``, newest first."""
    found = []
    for image in boot.glob("vmlinuz-*"):
        release = image.name.removeprefix("vmlinuz-")
        ipvlan = any((modules / release / "kernel/drivers/net/ipvlan").glob("ipvlan.ko*"))
        found.append(Kernel(release, image, ipvlan))
    return sorted(found, key=lambda k: release_key(k.release), reverse=True)


def find_kernel(spec: str | None = None, boot: Path = BOOT, modules: Path = MODULES) -> Kernel:
    """The kernel ``spec`` names (an image path, a release or a release prefix such as
    ``6.1``), or by default the newest kernel whose modules include ipvlan."""
    kernels = list_kernels(boot, modules)
    if spec and ("/" in spec or Path(spec).is_file()):
        image = Path(spec)
        if not image.is_file():
            raise VMError(f"--kernel {spec}: no such kernel image")
        release = image.name.removeprefix("vmlinuz-")
        ipvlan = any((modules / release / "kernel/drivers/net/ipvlan").glob("ipvlan.ko*"))
        return Kernel(release, image, ipvlan)
    if not kernels:
        raise VMError(f"no kernel image (vmlinuz-*) in {boot}: install the Debian package "
                      "linux-image-amd64 (run `make setup`)")
    if spec:
        match = [k for k in kernels if k.release == spec or k.release.startswith((spec + ".",
                                                                                  spec + "-"))]
        if not match:
            have = ", ".join(k.release for k in kernels)
            raise VMError(f"--kernel {spec}: no such kernel in {boot} (installed: {have})")
        return match[0]
    with_ipvlan = [k for k in kernels if k.has_ipvlan]
    if not with_ipvlan:
        raise VMError(f"no kernel in {boot} has ipvlan.ko under {modules}/<release>: install the "
                      "Debian package linux-image-amd64 (run `make setup`)")
    return with_ipvlan[0]


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


def covering(paths: Iterable[Path]) -> list[Path]:
    """The paths not inside another one of ``paths`` (sorted)."""
    out: list[Path] = []
    for p in sorted(set(paths)):
        if not any(p.is_relative_to(q) for q in out):
            out.append(p)
    return out


def guest_script(argv: Sequence[str], cwd: str, env: dict[str, str],
                 cached: Sequence[Path] = (), rwdirs: Sequence[Path] = ()) -> str:
    """The shell script the guest runs: markers around ``argv`` with a venv-first PATH.

    ``cached`` directories are re-mounted from a second, read-only 9p export of / with
    ``cache=loose`` (virtme-ng's root has no cache: every Python import stats over 9p,
    ~5x slower); ``rwdirs`` inside them are bound back on top so they stay writable.
    """
    q = shlex.quote
    exports = "".join(f"export {k}={q(v)}\n" for k, v in sorted(env.items()))
    lines = ["#!/bin/sh", f"echo '{START}' >&2"]
    if cached:
        inner = [d for d in rwdirs if any(d.is_relative_to(c) for c in cached)]
        mount = f"mount -t 9p -o {CACHE_OPTS} {CACHE_TAG} {CACHE_DIR}"
        lines.append(f"if mkdir -p {CACHE_DIR} && {mount}; then")
        for i, d in enumerate(inner):
            lines.append(f"  mkdir -p /run/linklab-rw{i} && "
                         f"mount --bind {q(str(d))} /run/linklab-rw{i}")
        for c in cached:   # (mkdir: a directory under one of virtme-ng's tmpfs mounts)
            lines.append(f"  mkdir -p {q(str(c))} && "
                         f"mount --bind {q(CACHE_DIR + str(c))} {q(str(c))}")
        for i, d in enumerate(inner):
            lines.append(f"  mount --bind /run/linklab-rw{i} {q(str(d))}")
        lines.append("else echo 'linklab vm: no cached 9p view; running uncached' >&2; fi")
    lines += [
        f"export PATH={q(str(VENV_BIN))}:{GUEST_PATH}",
        f"export VIRTUAL_ENV={q(sys.prefix)}",
        exports.rstrip("\n"),
        f"cd {q(cwd)} || exit 126",
        shlex.join(argv),
        "status=$?",
        f'echo "{END}$status" >&2',
        "exit $status",
    ]
    return "\n".join(line for line in lines if line) + "\n"


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


BOOT_ATTEMPTS = 2   # a guest that panics before its command starts is booted once more


def run(argv: Sequence[str], **kw: object) -> Outcome:
    """Boot ``kernel``, run ``argv`` in the current directory, stream its output, wait.

    A panic *before the command started* is retried once (the stock kernel's boot-time text
    patching can trip over an int3 under multi-threaded TCG with 2 vCPUs: ``Oops: int3`` in
    ``sched_clock_cpu``, seen in a fresh-clone CI run); the first console tail is printed.
    A panic once the command runs is the command's outcome and never retried."""
    err = kw.get("err") or sys.stderr.buffer
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        outcome = _run_once(argv, **kw)  # type: ignore[arg-type]
        if outcome.failure != "panic" or outcome.boot_s is not None or attempt == BOOT_ATTEMPTS:
            return outcome
        err.write(("linklab vm: the guest panicked while booting (before the command "  # type: ignore[union-attr]
                   "started); booting it once more. Console tail:\n"
                   + "\n".join(f"  | {line}" for line in outcome.console_tail[-8:])
                   + "\n").encode())
        err.flush()  # type: ignore[union-attr]
    return outcome


def _run_once(argv: Sequence[str], *, kernel: Kernel, cpus: int = DEFAULT_CPUS,
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
    guest_env = _guest_env(virt, env)
    if owner is not None:
        scriptdir = Path(owner.tmpdir("vm"))  # type: ignore[attr-defined]
    else:
        scriptdir = Path(tempfile.mkdtemp(prefix="linklab-vm-"))
    script, shared = _write_script(scriptdir, argv, guest_env, rwdirs, icount)
    if name is None:
        name = f"linklab-{owner.marker}" if owner is not None else "linklab"  # type: ignore[attr-defined]
    vng_argv = _vng_argv(vng, kernel, name, memory, cpus, shared, script, use_kvm, icount)
    vng_env = dict(os.environ, PATH=f"{VENV_BIN}:{os.environ.get('PATH', GUEST_PATH)}")
    console = _Console(time.monotonic())
    proc = subprocess.Popen(vng_argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=vng_env, start_new_session=True)
    pids = _Pids(owner)
    pids.record(proc.pid)
    try:
        _stream(proc, console, pids, out, err, cancel, timeout, boot_timeout)
    finally:
        _clean_up(proc, pids, scriptdir, owner)
    total = time.monotonic() - console.started
    console.vng_exited(proc.returncode)
    return Outcome(_exit_code(console.failure, console.status), kernel.release, virt,
                   console.boot_s, total, console.failure, list(console.tail))


def _guest_env(virt: str, env: dict[str, str] | None) -> dict[str, str]:
    """The guest command's environment: this process's ``LINKLAB_*``, the labels, ``env``."""
    guest_env = {k: v for k, v in os.environ.items() if k.startswith("LINKLAB_")}
    guest_env.update({"LINKLAB_VIRT": virt, "LINKLAB_IN_VM": "1", "PYTHONUNBUFFERED": "1"})
    # the guest runs Python ~20x and traffic ~25x slower: stretch every wait (probes, servers)
    guest_env.setdefault("LINKLAB_TIME_SCALE", "2" if virt == "kvm" else "5")
    if virt == ICOUNT_VIRT:   # the same hash order every boot; the clock's settings for meta.json
        guest_env.update({"PYTHONHASHSEED": "0", "LINKLAB_VM_QEMU": qemu_version(),
                          "LINKLAB_VM_ICOUNT": ICOUNT_OPTS})
    guest_env.update(env or {})
    return guest_env


def _write_script(scriptdir: Path, argv: Sequence[str], guest_env: dict[str, str],
                  rwdirs: Iterable[Path], icount: bool) -> tuple[Path, list[Path]]:
    """The guest script in ``scriptdir``, and the directories the guest may write (created)."""
    script = scriptdir / "guest.sh"
    shared = list(dict.fromkeys(Path(d).resolve() for d in (REPO / "results", *rwdirs)))
    for d in shared:
        d.mkdir(parents=True, exist_ok=True)
    # the host's compile cache too (llcost, BPF objects): virtme-ng puts a tmpfs on /var/cache
    # On the instruction clock /usr too: a read over the uncached 9p root leaves the vCPU idle,
    # and an idle guest's clock jumps to its next timer (sleep=off), which may be a command's
    # own timeout (a process in D state outlived stop_pid's 5 s after SIGKILL that way).
    cached = covering([*(Path(p).resolve() for p in (REPO, sys.prefix, sys.base_prefix)),
                       *([HOST_CACHE] if HOST_CACHE.is_dir() else []),
                       *([Path("/usr")] if icount else [])])
    script.write_text(guest_script(argv, os.getcwd(), guest_env, cached, shared))
    return script, shared


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


class _Pids:
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


@dataclass
class _Console:
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


def _stream(proc: subprocess.Popen, console: _Console, pids: _Pids, out: BinaryIO,
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


def _clean_up(proc: subprocess.Popen, pids: _Pids, scriptdir: Path, owner: object) -> None:
    """Stop QEMU and vng, close their pipes, drop their records and the guest script."""
    _stop(proc, pids.recorded)
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


def _stop(proc: subprocess.Popen, recorded: dict[int, int | None]) -> None:
    """Stop QEMU (and so vng), deepest process first, each by PID; wait for vng."""
    if proc.poll() is None:
        for pid in _descendants(proc.pid):
            stop_pid(pid, proc_starttime(pid), grace=2.0)
        stop_pid(proc.pid, recorded.get(proc.pid), grace=2.0)
    proc.wait()
    for pid, start in recorded.items():
        if pid != proc.pid:
            stop_pid(pid, start, grace=1.0)  # a QEMU orphaned by vng dying first


def cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kernel", metavar="PATH|RELEASE",
                        help="kernel image or release (prefix such as 6.1); default: newest "
                             "/boot/vmlinuz-* whose modules include ipvlan")
    parser.add_argument("--cpus", type=int, default=None,
                        help=f"guest CPUs (default: {DEFAULT_CPUS}; 1 with --clock "
                             "instructions)")
    parser.add_argument("--memory", default="2G", help="guest memory (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=1800, metavar="S",
                        help="stop the guest after S seconds, boot included (default: "
                             "%(default)g)")
    parser.add_argument("--rwdir", action="append", default=[], type=Path, metavar="DIR",
                        help="another host directory the guest may write (results/ always is)")
    parser.add_argument("--tcg", action="store_true", help="skip the KVM probe, use TCG")
    parser.add_argument("--clock", choices=CLOCKS, default="wall",
                        help="guest clock: wall, or instructions (TCG with QEMU -icount, "
                             "1 ns per guest instruction; 1 vCPU; default: %(default)s)")
    parser.add_argument("--name", help="guest hostname and QEMU -name (default: linklab-<run>)")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND...",
                        help="command to run in the guest")


def cli_main(args: argparse.Namespace) -> int:
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        print("linklab vm: no command given (usage: linklab vm [options] -- COMMAND...)",
              file=sys.stderr)
        return EXIT_SETUP
    from linklab.ownership import Run

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        kernel = find_kernel(args.kernel)
        run_owner = Run()
        try:
            cpus = args.cpus or (1 if args.clock == "instructions" else DEFAULT_CPUS)
            outcome = run(command, kernel=kernel, cpus=cpus, memory=args.memory,
                          timeout=args.timeout, rwdirs=args.rwdir, owner=run_owner,
                          kvm=False if args.tcg else None, name=args.name,
                          clock=args.clock)
        finally:
            run_owner.close()
    except (VMError, MissingTool) as exc:
        print(f"linklab vm: {exc}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        print("linklab vm: interrupted; QEMU stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if outcome.failure:
        print(f"linklab vm: guest {outcome.failure} on {outcome.kernel} ({outcome.virt}); "
              "last console lines:", file=sys.stderr)
        for line in outcome.console_tail[-TAIL_LINES:]:
            print(f"  | {line}", file=sys.stderr)
    print(f"{outcome.summary()} (kernel {outcome.kernel}, {outcome.virt})", file=sys.stderr)
    return outcome.returncode


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
