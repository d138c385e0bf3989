"""``linklab vm``: run a command on a stock distro kernel under QEMU (virtme-ng).

The host's root filesystem is shared read-only into the guest (9p), the command runs in
the same working directory with the same virtualenv, its output streams live, and files
written under the repository's ``results/`` come back (a read-write 9p share).

The boot is trimmed for TCG: ``-nodefaults`` drops the default CD-ROM and NIC, and the
modules udev would load for emulated hardware nobody uses (AHCI, KVM, watchdogs, crypto
accelerators) are blacklisted on the kernel command line; the guest command starts ~8 s
after QEMU instead of ~15 s.

One job per module: :mod:`.kernels` chooses the kernel, :mod:`.host` checks the host (tools,
KVM, the clock), :mod:`.script` writes the guest script, :mod:`.qemu` boots and stops QEMU
(its console read by :mod:`.console`, its processes owned by :mod:`.procs`), :mod:`.cli` is
the command; :mod:`.common` holds the error type and the paths they share.
"""

from linklab.vm.cli import cli_arguments, cli_main
from linklab.vm.common import GUEST_PATH, REPO, VENV_BIN, VMError
from linklab.vm.console import PANIC
from linklab.vm.host import (
    CLOCKS,
    ICOUNT,
    ICOUNT_OPTS,
    ICOUNT_SEED,
    ICOUNT_VIRT,
    KVM_PROBE_CACHE,
    TCG_OPTS,
    check_clock,
    check_tools,
    probe_kvm,
    qemu_version,
)
from linklab.vm.kernels import BOOT, MODULES, Kernel, find_kernel, list_kernels, release_key
from linklab.vm.qemu import (
    BLACKLIST,
    BOOT_ATTEMPTS,
    DEFAULT_CPUS,
    DEFAULT_GUESTS,
    EXIT_GUEST,
    EXIT_SETUP,
    EXIT_TIMEOUT,
    TAIL_LINES,
    Outcome,
    run,
    run_once,
)
from linklab.vm.script import (
    CACHE_DIR,
    CACHE_OPTS,
    CACHE_QEMU_OPTS,
    CACHE_TAG,
    END,
    HOST_CACHE,
    START,
    covering,
    guest_env,
    guest_script,
    write_script,
)

__all__ = [
    "BLACKLIST", "BOOT", "BOOT_ATTEMPTS", "CACHE_DIR", "CACHE_OPTS", "CACHE_QEMU_OPTS",
    "CACHE_TAG", "CLOCKS", "DEFAULT_CPUS", "DEFAULT_GUESTS", "END", "EXIT_GUEST", "EXIT_SETUP",
    "EXIT_TIMEOUT", "GUEST_PATH", "HOST_CACHE", "ICOUNT", "ICOUNT_OPTS", "ICOUNT_SEED",
    "ICOUNT_VIRT", "KVM_PROBE_CACHE", "MODULES", "PANIC", "REPO", "START", "TAIL_LINES",
    "TCG_OPTS", "VENV_BIN", "Kernel", "Outcome", "VMError", "check_clock", "check_tools",
    "cli_arguments", "cli_main", "covering", "find_kernel", "guest_env", "guest_script",
    "list_kernels", "probe_kvm", "qemu_version", "release_key", "run", "run_once",
    "write_script",
]
