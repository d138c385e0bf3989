"""The ``linklab`` command: one subcommand per module, imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module providing cli_arguments(parser) and cli_main(args) -> int, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("linklab.capabilities", "show which link kinds, modes and tools this machine has"),
    "clean": ("linklab.cleanup", "remove what dead linklab runs left behind (by ownership record)"),
    "vm": ("linklab.vm", "run a command on a stock distro kernel under QEMU (virtme-ng)"),
    "report": ("linklab.report", "render the HTML report from a saved results directory"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linklab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = (argv if argv is not None else sys.argv[1:])[:1]
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if wanted == [name]:
            importlib.import_module(module).cli_arguments(p)
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command][0])
    return int(module.cli_main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
