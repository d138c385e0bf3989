"""``linklab record FILE``: build a scenario, observe every applicable cell and print an
[expect] table of what this kernel did, ready to paste — snapshot testing for a new topology:
pin its behaviour in one step, then write the reasons."""

from __future__ import annotations

import argparse
import json
import os
import sys

from linklab.build import BuildError, build
from linklab.capabilities import missing_link, missing_tool
from linklab.checks import cells
from linklab.flows import GROUP_RULE, Flow, FlowCheck
from linklab.model import Scenario, ScenarioError, load_scenario
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
    flows: list[tuple[FlowCheck, str]] = []      # the scenario's own checks, as observed
    run = Run()
    try:
        with build(sc, run) as topo:
            obs = Observer(topo, todo)
            for c in todo:
                if c.flows:
                    flows += [(fc, o.result) for fc, o in obs.flows(c)]
                else:
                    observed.setdefault(c.check, {})[c.family] = obs.observe(c).result
    except BuildError as exc:
        print(f"linklab record: {exc}", file=sys.stderr)
        return 1
    finally:
        run.close()
    if sc.expect:
        print(f"linklab record: {args.file} has an [expect] table: replace it with this one",
              file=sys.stderr)
    kernel = os.uname().release
    print("\n".join(expect_table(observed, kernel)))
    if flows:
        print("# your own checks as observed: replace your [pairs] and [[check]] tables with "
              "these", file=sys.stderr)
        print("\n".join(own_tables(sc, flows, kernel)))
    return 0


def _rule(results: list[tuple[FlowCheck, str]], group_of: dict[str, str]) -> str | None:
    """The one [pairs] rule every observation of a destination class follows, or None."""
    seen = {r for _fc, r in results}
    if len(seen) == 1 and seen <= {"pass", "blocked"}:
        return seen.pop()
    if group_of and all((group_of.get(fc.flow.src) == group_of.get(fc.flow.dst)) ==
                        (r == "pass") for fc, r in results):
        return GROUP_RULE
    return None


def rule_of(sc: Scenario, flow: Flow) -> str:
    """The [pairs] rule a pair falls under: containers, host, gateway or remote."""
    if flow.dst == sc.node(flow.src).host:
        return "host"
    return {"upstream": "gateway", "remote": "remote"}.get(flow.dst, "containers")


def own_tables(sc: Scenario, flows: list[tuple[FlowCheck, str]], kernel: str) -> list[str]:
    """A [pairs] table whose rules describe what was observed (the majority, when no rule
    does) and [[check]] tables: the scenario's own, then every pair no rule describes."""
    why = f'"observed on {kernel}: <fill in the reason>"'
    lines: list[str] = []
    checks = {(fc.flow, fc.family): r for fc, r in flows if fc.origin == "check"}
    exceptions: dict[tuple[Flow, str], str] = {}
    if sc.pairs is not None:
        group_of = {m: g for g, ms in sc.groups.items() for m in ms}
        by_rule: dict[str, list[tuple[FlowCheck, str]]] = {}
        for fc, r in flows:
            if fc.origin == "pairs":
                by_rule.setdefault(rule_of(sc, fc.flow), []).append((fc, r))
        probes = [p.proto if p.port is None else f"{p.proto}:{p.port}" for p in sc.pairs.probes]
        lines += ["", "[pairs]", f"probes = {json.dumps(probes)}",
                  f"families = {json.dumps(list(sc.pairs.families))}"]
        for rule, results in by_rule.items():
            found = _rule(results, group_of)
            if found is None:      # the majority, and each other pair as a [[check]]
                found = max(("pass", "blocked"), key=lambda v: sum(r == v for _f, r in results))
                exceptions |= {(fc.flow, fc.family): r for fc, r in results if r != found}
            lines.append(f'{rule} = "{found}"')
        lines.append(f"why = {why}")
    by_flow: dict[Flow, dict[str, str]] = {}
    for (flow, family), r in {**checks, **exceptions}.items():
        by_flow.setdefault(flow, {})[family] = r
    for flow, results in by_flow.items():
        to = flow.dst if flow.port is None else f"{flow.dst}:{flow.port}"
        # one table for both families when they agree, else one per family
        split = [(None, results["v4"])] if set(results) == {"v4", "v6"} and \
            len(set(results.values())) == 1 else list(results.items())
        for family, r in split:
            lines += ["", "[[check]]", f'from = "{flow.src}"', f'to = "{to}"',
                      f'proto = "{flow.proto}"'] + ([f'family = "{family}"'] if family else []) \
                + [f'expect = "{r}"', f"why = {why}"]
    return lines
