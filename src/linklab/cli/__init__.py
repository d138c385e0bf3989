"""The ``linklab`` command: one subcommand per module, imported only when used."""

# The command modules live in this package; ``doctor`` and ``vm`` are the faces of
# linklab.capabilities and linklab.vm. ``linklab --help`` imports none of them.

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> ("module" providing cli_arguments(parser) and cli_main(args) -> int, or
# "module:prefix" providing prefix_arguments and prefix_main; help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("linklab.cli.validate", "validate scenario files; print every cell, expected result "
                                  "and reason"),
    "up": ("linklab.cli.lab:up", "build a scenario and keep it up (pinned: clean leaves it alone)"),
    "exec": ("linklab.cli.lab:exec", "run a command in a node's namespace of a topology that "
                                     "is up"),
    "down": ("linklab.cli.lab:down", "release a topology that is up (LIFO), or --all"),
    "ls": ("linklab.cli.lab:ls", "list the topologies that are up"),
    "record": ("linklab.cli.record", "build a scenario, observe every cell, print its [expect] "
                                 "table"),
    "schema": ("linklab.cli.schema", "print the JSON Schema of the scenario format"),
    "doctor": ("linklab.capabilities", "show which link kinds, modes and tools this machine has"),
    "clean": ("linklab.cli.cleanup", "remove what dead linklab runs left behind (by ownership "
                                     "record)"),
    "vm": ("linklab.vm", "run a command on a stock distro kernel under QEMU (virtme-ng)"),
    "report": ("linklab.cli.report", "render the HTML report from a saved results directory"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="linklab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = (argv if argv is not None else sys.argv[1:])[:1]
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        if wanted == [name]:
            entry(module, "arguments")(p)
    args = parser.parse_args(argv)
    return int(entry(COMMANDS[args.command][0], "main")(args) or 0)


def entry(target: str, what: str):
    """The function ``what`` (arguments | main) of a COMMANDS target."""
    module, _, prefix = target.partition(":")
    return getattr(importlib.import_module(module), f"{prefix or 'cli'}_{what}")
