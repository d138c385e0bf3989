"""Generated bad input (Hypothesis, by the thousand), hostile strings in a report, and results
on a disk that fills or turns read-only mid-run: each runs its pytest module and reads the
figures the tests put in their JUnit XML."""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from linklab.drill import ROOT
from linklab.drill.runner import Drill
from linklab.drill.targets import pytest_argv

GENERATED = "tests/unit/test_generated_input.py"
HOSTILE = "tests/live/test_report_browser.py::test_hostile_strings_render_as_text_in_chromium"
DISK = "tests/live/test_results_disk.py"
GENERATED_CASES = 1000   # examples per property (7 properties): ~30 s with -n 2


@dataclass
class Case:
    """One test case of a JUnit file: its name, its failure text and its properties."""

    name: str
    failure: str | None
    skipped: bool
    properties: dict[str, str] = field(default_factory=dict)


def junit_cases(path: str) -> list[Case]:
    out = []
    for tc in ET.parse(path).getroot().iter("testcase"):
        bad = tc.find("failure")
        if bad is None:
            bad = tc.find("error")
        out.append(Case(tc.get("name", "?"),
                        None if bad is None else f"{bad.get('message', '')}\n{bad.text or ''}",
                        tc.find("skipped") is not None,
                        {p.get("name", ""): p.get("value", "")
                         for p in tc.iter("property")}))
    return out


def _run(d: Drill, tag: str, argv: tuple[str, ...], extra_env: dict[str, str],
         timeout_s: float) -> tuple[list[Case], float, bool]:
    """The cases of one pytest run, its wall time, and whether it ran past ``timeout_s``."""
    rec, res, logpath = d.fresh(tag)
    junit = f"{res}/junit.xml"
    t0 = time.monotonic()
    hung = False
    with open(logpath, "w") as log:
        try:
            subprocess.run([*argv, f"--junitxml={junit}"], cwd=ROOT,
                           env={**d.env(rec), **extra_env}, stdout=log,
                           stderr=subprocess.STDOUT, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:   # run() kills the pytest it started
            hung = True
    wall = time.monotonic() - t0
    try:
        cases = junit_cases(junit)
    except (OSError, ET.ParseError) as exc:
        d.log(f"  {tag}: no JUnit XML ({exc}); log {logpath}")
        cases = []
    return cases, wall, hung


def generated_inputs(d: Drill, cases: int = GENERATED_CASES) -> dict:
    """Thousands of generated scenario files and tool outputs: how many ran, how many ended
    in another exception than the loader's or parser's own (tracebacks), how many hung."""
    ran, wall, hung = _run(d, "generated", pytest_argv(GENERATED, "-n", "2", "-rf"),
                           {"LINKLAB_GENERATED_CASES": str(cases)}, timeout_s=600)
    failed = [c for c in ran if c.failure is not None]
    hangs = [c for c in failed if "hang:" in c.failure or "DeadlineExceeded" in c.failure]
    row = {"properties": sum("cases" in c.properties for c in ran),
           "cases": sum(int(c.properties.get("cases", 0)) for c in ran),
           "tests": len(ran), "tracebacks": len(failed) - len(hangs),
           "hangs": len(hangs) + hung, "wall_s": round(wall, 1),
           "failed": [c.name for c in failed]}
    d.log(f"  generated bad input: {row['cases']} cases over {row['properties']} properties "
          f"({row['tests']} tests) in {wall:.0f} s, {row['tracebacks']} tracebacks, "
          f"{row['hangs']} hangs" + (f"; failed: {', '.join(row['failed'])}"
                                     if failed else ""))
    return row


def hostile_strings(d: Drill) -> dict:
    """A report rendered from a results directory full of HTML/JS, opened in headless
    Chromium: scripts that ran, payloads shown as text."""
    ran, wall, hung = _run(d, "hostile", pytest_argv(HOSTILE, "-rfs"), {}, timeout_s=300)
    case = ran[0] if ran else None
    row = {"ran": case is not None and not case.skipped, "passed": bool(case) and
           case.failure is None and not case.skipped, "hung": hung,
           "scripts_run": int(case.properties["scripts_run"]) if case and
           "scripts_run" in case.properties else None,
           "shown": case.properties.get("payloads_shown", "?") if case else "?",
           "wall_s": round(wall, 1),
           "failure": (case.failure or "").strip().splitlines()[0][:160]
           if case and case.failure else ""}
    d.log(f"  hostile strings: {row['scripts_run']} scripts run, {row['shown']} payloads shown "
          f"as text, in {wall:.0f} s" + (f"; {row['failure']}" if row["failure"] else "")
          + ("; skipped (no chromium?)" if case and case.skipped else ""))
    return row


def results_disk(d: Drill) -> dict:
    """The veth matrix writing to a tmpfs that fills, and to one remounted read-only, and the
    veth bench to one that fills: runs stopped naming the file, rows kept whole, nothing
    left, the remains rendered."""
    ran, wall, hung = _run(d, "disk", pytest_argv(DISK, "-rfs"), {}, timeout_s=600)
    passed = [c for c in ran if c.failure is None and not c.skipped]
    row = {"tried": len(ran), "passed": len(passed), "hung": hung, "wall_s": round(wall, 1),
           "rows_kept": [int(c.properties.get("rows_kept", 0)) for c in ran],
           "failed": [f"{c.name}: {(c.failure or 'skipped').strip().splitlines()[0][:120]}"
                      for c in ran if c not in passed]}
    d.log(f"  results disk full / read-only: {row['passed']}/{row['tried']} stopped cleanly, "
          f"rows kept {row['rows_kept']}, in {wall:.0f} s"
          + (f"; {'; '.join(row['failed'])}" if row["failed"] else ""))
    return row
