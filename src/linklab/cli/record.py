"""``linklab record FILE``: build a scenario, observe every applicable cell and print an
[expect] table of what this kernel did, ready to paste — snapshot testing for a new topology:
pin its behaviour in one step, then write the reasons."""

from __future__ import annotations

import argparse
import os
import sys

from linklab.build import BuildError, build
from linklab.capabilities import missing_link, missing_tool
from linklab.checks import cells
from linklab.model import ScenarioError, load_scenario
from linklab.ownership import Run
from linklab.probes import Observer


def cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a scenario file ([expect] optional)")


def expect_table(observed: dict[str, dict[str, str]], kernel: str) -> list[str]:
    """[expect] lines: one result when every family agrees, else one per family."""
    lines = ["[expect]"]
    why = f'why = "observed on {kernel}: <fill in the reason>"'
    for check, by_family in observed.items():
        results = set(by_family.values())
        if len(results) == 1:
            lines.append(f'{check} = {{ result = "{results.pop()}", {why} }}')
        else:
            fams = ", ".join(f'{f} = "{r}"' for f, r in by_family.items())
            lines.append(f"{check} = {{ {fams}, {why} }}")
    return lines


def cli_main(args: argparse.Namespace) -> int:
    try:
        sc = load_scenario(args.file, require_expect=False)
    except ScenarioError as exc:
        print(exc, file=sys.stderr)
        return 1
    for h in sc.hosts:
        if why := missing_link(h.kind, h.mode, h.flag):
            print(f"linklab record: {args.file}: {why}", file=sys.stderr)
            return 2
    todo = cells(sc)
    if (why := missing_tool("nft")) and any(c.check == "host-netfilter" for c in todo):
        print(f"linklab record: host-netfilter not observed: {why}", file=sys.stderr)
        todo = [c for c in todo if c.check != "host-netfilter"]
    observed: dict[str, dict[str, str]] = {}
    run = Run()
    try:
        with build(sc, run) as topo:
            obs = Observer(topo, todo)
            for c in todo:
                observed.setdefault(c.check, {})[c.family] = obs.observe(c).result
    except BuildError as exc:
        print(f"linklab record: {exc}", file=sys.stderr)
        return 1
    finally:
        run.close()
    if sc.expect:
        print(f"linklab record: {args.file} has an [expect] table: replace it with this one",
              file=sys.stderr)
    print("\n".join(expect_table(observed, os.uname().release)))
    return 0
