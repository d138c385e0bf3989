"""``linklab clean``: remove what dead runs recorded, and the objects that name a dead
process as their maker and that no record lists (ownership.UNRECORDED_KINDS)."""

from __future__ import annotations

import argparse

from linklab.ownership import clean


def cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the summary")


def cli_main(args: argparse.Namespace) -> int:
    removed = clean(log=(lambda _m: None) if args.quiet else print)
    runs = [r for r in removed if not r.unrecorded]
    ns = sum(len(r.namespaces) for r in runs)
    pids = sum(len(r.pids) for r in runs)
    paths = sum(len(r.paths) for r in runs)
    objects = sum(len(r.objects) for r in runs)
    unrecorded = sum(len(r.objects) for r in removed if r.unrecorded)
    print(f"linklab clean: {len(runs)} dead run(s); {ns} namespace(s), {pids} process(es), "
          f"{paths} path(s), {objects} other object(s) listed in their records; "
          f"{unrecorded} object(s) no record listed, named after a dead process")
    return 0
