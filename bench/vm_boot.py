"""VM leg boot figures: boot-to-first-command and whole-run wall time of ``linklab vm``.

    .venv/bin/python bench/vm_boot.py [--runs N] [--kernel RELEASE]

Boots the guest N times running ``true`` and prints, per run and as medians, the boot time
(QEMU start to the guest command starting), the total wall time, the CPU seconds the VM
used (vng, virtme-run and QEMU together) and the host load average, then the ratio of the
median boot to the 30 s target. Under TCG the figures scale with host CPU contention, so the
load average is printed next to them.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import sys

from linklab import vm
from linklab.ownership import Run

TARGET_BOOT_S = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kernel", default=None)
    args = parser.parse_args()
    kernel = vm.find_kernel(args.kernel)
    boots, totals = [], []
    for i in range(args.runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        load = os.getloadavg()[0]
        owner = Run()
        try:
            out = vm.run(["true"], kernel=kernel, owner=owner, out=io.BytesIO(),
                         err=io.BytesIO())
        finally:
            owner.close()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if out.failure or out.boot_s is None:
            print(f"run {i + 1}: {out.failure}\n" + "\n".join(out.console_tail[-10:]))
            return 1
        boots.append(out.boot_s)
        totals.append(out.total_s)
        print(f"run {i + 1}: boot_s={out.boot_s:.2f} total_s={out.total_s:.2f} "
              f"cpu_s={cpu_s:.2f} load_1min={load:.2f} kernel={out.kernel} virt={out.virt}")
    boot, total = statistics.median(boots), statistics.median(totals)
    print(f"median: boot_s={boot:.2f} total_s={total:.2f} "
          f"boot/target={boot / TARGET_BOOT_S:.2f} (target {TARGET_BOOT_S:g} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
