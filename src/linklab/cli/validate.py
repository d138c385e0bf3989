"""``linklab check FILE|DIR...``: validate scenario files and print every cell they declare
with its expected result and reason; exit 1 with ``file: field: message`` on a problem."""

from __future__ import annotations

import argparse
import sys

from linklab.checks import cells
from linklab.model import ScenarioError, load_paths


def cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="FILE|DIR")


def cli_main(args: argparse.Namespace) -> int:
    try:
        scenarios = load_paths(args.paths)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return 1
    total = 0
    for sc in scenarios:
        hosts = ", ".join(f"{h.name}: {h.label}" for h in sc.hosts)
        print(f"{sc.path}: {sc.name} ({hosts}; {len(sc.containers)} containers)")
        for c in cells(sc):
            print(f"  {c.id:<50} {c.expected:<8} {c.why}")
            total += 1
    print(f"linklab check: {len(scenarios)} scenario(s), {total} cell(s), all valid")
    return 0
