"""``linklab clean``: remove what dead runs recorded, and nothing else."""

from __future__ import annotations

import argparse

from linklab.ownership import clean


def cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")


def cli_main(args: argparse.Namespace) -> int:
    removed = clean(log=(lambda _m: None) if args.quiet else print)
    ns = sum(len(r.namespaces) for r in removed)
    pids = sum(len(r.pids) for r in removed)
    paths = sum(len(r.paths) for r in removed)
    objects = sum(len(r.objects) for r in removed)
    print(f"linklab clean: {len(removed)} dead run(s); {ns} namespace(s), {pids} process(es), "
          f"{paths} path(s), {objects} other object(s) listed in their records")
    return 0
