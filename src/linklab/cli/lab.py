"""``linklab up | exec | down | ls``: keep a topology up to poke at it while you build it.

``up`` builds a scenario and leaves it standing after the command ends: its ownership record
is *pinned* under a name, so ``linklab clean`` and test sessions leave it alone, and only
``linklab down NAME`` releases it (processes inside it by PID, then its namespaces, last
created first; links die with their namespace).
"""

from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import time

from linklab.build import BuildError, start
from linklab.capabilities import missing_link
from linklab.cmd import NETNS_DIR, proc_starttime, wrap
from linklab.live import LiveTopology
from linklab.model import SCENARIO_NAME_RE, ScenarioError, load_scenario
from linklab.ownership import RECORD_DIR, Leftovers, Run, claim_and_release, read_record


def pinned() -> dict[str, tuple[str, Leftovers]]:
    """Topologies that are up: name -> (record path, record)."""
    out = {}
    for path in sorted(glob.glob(f"{RECORD_DIR}/*.jsonl")):
        try:
            left = read_record(path)
        except FileNotFoundError:
            continue
        if left.pin is not None:
            out[left.pin] = (path, left)
    return out


def fail(message: str, status: int = 1) -> int:
    print(f"linklab: {message}", file=sys.stderr)
    return status


# ---- up -----------------------------------------------------------------------------------

def up_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a scenario file ([expect] optional)")
    parser.add_argument("--name", help="what to call it (default: the scenario's name)")
    parser.add_argument("--held-by", type=int, metavar="PID",
                        help="keep it only while process PID lives (e.g. a CI job or a test): "
                             "once PID is gone, `linklab clean` removes it like a dead run's")


def up_main(args: argparse.Namespace) -> int:
    try:
        sc = load_scenario(args.file, require_expect=False)
    except ScenarioError as exc:
        return fail(str(exc))
    name = args.name or sc.name
    if not SCENARIO_NAME_RE.match(name):
        return fail(f"--name {name!r}: lower-case letters, digits and '-', at most 40")
    if name in pinned():
        return fail(f"a topology named {name!r} is up already: `linklab down {name}` first, "
                    "or give --name")
    for h in sc.hosts:
        if why := missing_link(h.kind, h.mode, h.flag):
            return fail(f"{args.file}: {why}", 2)
    run = Run()
    try:
        try:
            topo, resources = start(sc, run)
        except BuildError as exc:
            return fail(str(exc))
        try:
            holder = {"pid": args.held_by, "start": proc_starttime(args.held_by)} \
                if args.held_by else None
            run.pin(name, scenario=os.path.abspath(args.file), nodes=list(topo.namespaces),
                    created=time.time(), held_by=holder)
        except BaseException:
            resources.close()
            raise
        print(f"linklab up: {name} ({sc.label}, {args.file}); record {run.record}")
        for line in LiveTopology(topo).describe():
            print(f"  {line}")
        print(f"run `linklab exec {name} NODE -- ARGV...`; release with `linklab down {name}`")
        resources.pop_all()        # kept: the namespaces outlive this process
    finally:
        run.close()                # the record stays while what it lists exists
    return 0


# ---- exec ---------------------------------------------------------------------------------

def exec_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("node", metavar="NODE", help="c1, host, upstream, remote, ...")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- ARGV...")


def exec_main(args: argparse.Namespace) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        return fail("exec: give the command after --", 2)
    up = pinned()
    if args.name not in up:
        return fail(f"no topology named {args.name!r} is up (up: {', '.join(up) or 'none'})")
    path, left = up[args.name]
    nodes = left.pin_info.get("nodes", [])
    if args.node not in nodes:
        return fail(f"{args.name}: no node {args.node!r} (nodes: {', '.join(nodes)})")
    marker = os.path.basename(path).removesuffix(".jsonl")
    ns = f"{NETNS_DIR}/ll{marker}-{args.node}"
    try:
        return subprocess.run(wrap(argv, ns), check=False).returncode
    except FileNotFoundError:
        return fail(f"exec: {argv[0]}: not found", 127)


# ---- down / ls ----------------------------------------------------------------------------

def down_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?")
    parser.add_argument("--all", action="store_true", help="every topology that is up")


def down_main(args: argparse.Namespace) -> int:
    up = pinned()
    if args.all == bool(args.name):
        return fail("down: give NAME or --all", 2)
    names = list(up) if args.all else [args.name]
    if args.name and args.name not in up:
        return fail(f"no topology named {args.name!r} is up (up: {', '.join(up) or 'none'})")
    for name in names:
        path, left = up[name]
        claim_and_release(path, left, log=print, owner=f"topology {name}, run",
                          prefix="linklab down")
        print(f"linklab down: {name} released")
    return 0


def ls_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def ls_main(args: argparse.Namespace) -> int:
    up = pinned()
    if not up:
        print("no topology is up")
    for name, (_path, left) in up.items():
        alive = [n for n in left.namespaces if os.path.exists(f"{NETNS_DIR}/{n}")]
        created = left.pin_info.get("created", 0)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        print(f"{name:<20} {len(alive)}/{len(left.namespaces)} namespaces  up since {when}  "
              f"{left.pin_info.get('scenario', '?')}  nodes: "
              f"{', '.join(left.pin_info.get('nodes', []))}")
    return 0
