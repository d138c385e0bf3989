"""Datapath anatomy: the exact kernel path of probe packets, run twice, compared.

    .venv/bin/python bench/anatomy.py [--vm] [--families v4[,v6]] [--checks a,b] [--runs N]
                                      [--datapaths a,b] [--results-dir DIR]

Prints one line per datapath x check x direction:
``anatomy <datapath> <check> <dir>: queue=N xmit=N rx=N stack=N nf=N drop=<reason|->``
(a v6 check is printed as ``<check>/v6``), for the references (veth-pair) and every scenario
whose children forward to each other (the benchmark's datapaths), on this kernel, twice; the
last line is ``anatomy: <N> datapaths, identical across runs`` or the differences.

``--vm`` does the same inside the VM leg (QEMU, Debian kernel) for the datapaths this kernel
lacks (ipvlan, netkit, ...) *and* for the host's datapaths, and then compares the VM's counts
of the host datapaths with this kernel's: the same datapath must give the same counts.
Counts are tracepoint hits, not timings: load does not change them (printed anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from linklab.anatomy.datapaths import MAIN_CHECKS, VETH_PAIR, open_scenario, open_veth_pair
from linklab.anatomy.measure import Anatomy, rows, trace
from linklab.bench.datapaths import LOOPBACK, datapaths
from linklab.capabilities import missing_link
from linklab.model import SHIPPED
from linklab.ownership import Run
from linklab.results import RunDir, kernel_release, new_run_id, virtualisation

REPO = Path(__file__).resolve().parents[1]


def candidates(scenario_dir: Path) -> dict[str, object]:
    """name -> scenario (None for veth-pair): the benchmark's datapaths minus loopback."""
    out: dict[str, object] = {}
    for dp in datapaths(scenario_dir):
        if dp.name == LOOPBACK.name:
            continue
        out[dp.name] = dp.scenario
    return out


def lacking(sc: object) -> str | None:
    if sc is None:
        return None
    return next((why for h in sc.hosts if (why := missing_link(h.kind, h.mode, h.flag))), None)


def measure(name: str, sc: object, run: Run, checks: tuple[str, ...],
            families: tuple[str, ...]) -> tuple[object, list[Anatomy]]:
    opener = open_veth_pair(run, families) if sc is None else \
        open_scenario(sc, run, checks, families)
    with opener as target:
        return target, trace(target, run)


def keyed(measured: list[Anatomy]) -> list[tuple]:
    return [a.key() for a in measured]


def run_all(names: dict[str, object], args: argparse.Namespace) -> dict[str, list[list[tuple]]]:
    """name -> one list of keys per run; prints the first run's lines as they come."""
    checks, families = tuple(args.checks.split(",")), tuple(args.families.split(","))
    out: dict[str, list[list[tuple]]] = {}
    store = RunDir.create(args.results_dir, os.environ.get("LINKLAB_RUN_ID") or
                          new_run_id("anat")) if args.results_dir else None
    run = Run()
    try:
        for name, sc in names.items():
            if (why := lacking(sc)):
                print(f"anatomy {name}: skipped, {why}")
                continue
            out[name] = []
            for i in range(args.runs):
                target, measured = measure(name, sc, run, checks, families)
                out[name].append(keyed(measured))
                if i == 0:
                    for a in measured:
                        print(a.line(name), flush=True)
                        if args.paths:
                            print(f"    path: {a.path or '-'}\n    netfilter: {a.nf_path or '-'}"
                                  + (f"\n    drop: {a.drop_location}" if a.drops else ""))
                    if store is not None:
                        for row in rows(target, measured, kernel_release(), virtualisation()):
                            store.append("anatomy", row, part=f"bench-{kernel_release()}-"
                                                              f"{virtualisation()}")
    finally:
        run.close()
    return out


def differences(per_name: dict[str, list[list[tuple]]]) -> list[str]:
    diffs = []
    for name, runs in per_name.items():
        for i, other in enumerate(runs[1:], start=2):
            for a, b in zip(runs[0], other):
                if a != b:
                    diffs.append(f"{name} run 1 vs {i}: {a} != {b}")
            if len(runs[0]) != len(other):
                diffs.append(f"{name} run 1 vs {i}: {len(runs[0])} != {len(other)} probes")
    return diffs


def summary(per_name: dict[str, list[list[tuple]]], where: str = "") -> int:
    diffs = differences(per_name)
    for d in diffs:
        print(f"anatomy difference{where}: {d}")
    n = len(per_name)
    if diffs:
        print(f"anatomy{where}: {n} datapaths, {len(diffs)} difference(s) across runs")
        return 1
    print(f"anatomy{where}: {n} datapaths, identical across runs")
    return 0


def in_vm(args: argparse.Namespace, names: dict[str, object]) -> int:
    """Run this script in the VM leg on every datapath; compare with this kernel's counts."""
    from linklab import vm

    host = {n: sc for n, sc in names.items() if lacking(sc) is None}
    print(f"anatomy: host kernel {kernel_release()}, load {os.getloadavg()[0]:.2f}: "
          f"{len(host)} datapaths here, all {len(names)} in the VM", flush=True)
    here = run_all(host, argparse.Namespace(**{**vars(args), "runs": 1, "results_dir": None}))
    out_dir = REPO / "results"
    out_dir.mkdir(exist_ok=True)
    dump = out_dir / f".anatomy-vm-{os.getpid()}.json"
    argv = [sys.executable, str(Path(__file__).resolve()), "--guest", str(dump),
            "--families", args.families, "--checks", args.checks, "--runs", str(args.runs),
            "--datapaths", ",".join(names)] + (["--paths"] if args.paths else [])
    if args.results_dir:
        argv += ["--results-dir", str(args.results_dir)]
    owner = Run()
    try:
        outcome = vm.run(argv, kernel=vm.find_kernel(args.kernel), owner=owner,
                         timeout=args.vm_timeout)
    finally:
        owner.close()
    print(outcome.summary())
    if outcome.returncode != 0 or not dump.exists():
        print(f"anatomy: the VM leg failed ({outcome.failure or outcome.returncode})")
        return 1
    guest = {k: [[tuple(x) for x in r] for r in v] for k, v in json.loads(dump.read_text()).items()}
    dump.unlink()
    rc = summary(guest, " (vm)")
    same = {n: [here[n][0], guest[n][0]] for n in here if n in guest}
    diffs = differences(same)
    for d in diffs:
        print(f"anatomy host vs vm: {d.replace('run 1 vs 2', 'host vs vm')}")
    print(f"anatomy host vs vm: {len(same)} datapaths, "
          + ("identical" if not diffs else f"{len(diffs)} difference(s)"))
    return rc or (1 if diffs else 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vm", action="store_true", help="also run in the VM leg and compare")
    parser.add_argument("--kernel", default=None, help="VM kernel (release prefix or image)")
    parser.add_argument("--vm-timeout", type=float, default=1800)
    parser.add_argument("--families", default="v4")
    parser.add_argument("--checks", default=",".join(MAIN_CHECKS))
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--datapaths", default="", help="comma-separated names (default: all)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="also append the rows to <dir>/<run-id>/anatomy.*.jsonl")
    parser.add_argument("--paths", action="store_true",
                        help="under each line, the path device by device and the hooks crossed")
    parser.add_argument("--guest", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = {VETH_PAIR: None} | {k: v for k, v in candidates(SHIPPED).items() if k != VETH_PAIR}
    if args.datapaths:
        wanted = args.datapaths.split(",")
        unknown = [w for w in wanted if w not in names]
        if unknown:
            parser.error(f"--datapaths: unknown {', '.join(unknown)} (known: {', '.join(names)})")
        names = {w: names[w] for w in wanted}
    if args.vm:
        return in_vm(args, names)
    print(f"anatomy: kernel {kernel_release()} ({virtualisation()}), "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    per_name = run_all(names, args)
    if args.guest is not None:
        args.guest.write_text(json.dumps(per_name))
    return summary(per_name)


if __name__ == "__main__":
    sys.exit(main())
