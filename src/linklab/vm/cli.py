"""``linklab vm [options] -- COMMAND...``: the command line over :func:`linklab.vm.run`."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from linklab.cmd import MissingTool
from linklab.ownership import Run
from linklab.vm.common import VMError
from linklab.vm.host import CLOCKS
from linklab.vm.kernels import find_kernel
from linklab.vm.qemu import DEFAULT_CPUS, EXIT_SETUP, TAIL_LINES, run


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
