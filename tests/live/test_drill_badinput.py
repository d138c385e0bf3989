"""Bad input corpus (drill item 5): every malformed scenario, option or file gives one clear
message naming the file/field/option, a non-zero exit (or, for a missing tool, a skip naming
the Debian package), and leaves nothing behind (records, namespaces, temp dirs, processes).

Option and file cases run the real commands. The scenario corpus, loaded the way the suite
loads a scenario directory, is tests/unit/test_scenarios.py (the drill counts both).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from linklab.model import SHIPPED
from tests import DATA, REPO

SAMPLE = DATA / "results-sample"
PY = sys.executable
LINKLAB = [PY, "-m", "linklab.cli"]
PYTEST = [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]


@dataclass(frozen=True)
class Case:
    id: str
    argv: list[str]
    words: tuple[str, ...]             # the message must contain each of these
    setup: Callable[[Path], dict[str, str]] | None = None   # prepares files; returns {KEY: val}
    skip_ok: bool = False              # a skip naming the tool is the right answer
    note_ok: bool = False              # the report renders what it can, naming the bad file


def write_sample(tmp: Path, name: str, corrupt: dict[str, str]) -> Path:
    d = tmp / name
    shutil.copytree(SAMPLE, d)
    for f, text in corrupt.items():
        (d / f).write_text(text)
    return d


def corrupt_parquet_only(tmp: Path) -> dict[str, str]:
    """A run dir whose only bench table is a corrupt parquet (no .jsonl rows to fall back on)."""
    d = tmp / "r"
    d.mkdir()
    shutil.copy(SAMPLE / "meta.json", d)
    (d / "bench.parquet").write_text("not parquet at all")
    return {"R": str(d)}


def bad_scenario_dir(tmp: Path) -> dict[str, str]:
    d = tmp / "scenarios"
    d.mkdir()
    (d / "bad.toml").write_text((SHIPPED / "macvlan-bridge.toml").read_text().replace(
        'kind = "macvlan"', 'kind = "macvtap"'))     # unknown kind
    return {"DIR": str(d)}


def hide_tool(tool: str) -> list[str]:
    """argv prefix: a private mount namespace in which ``tool`` is a non-executable file
    (private propagation: nothing is visible outside; the host's tool is untouched)."""
    path = shutil.which(tool)
    assert path, f"{tool} must be installed for this case"
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            f'mount --bind /dev/null "{path}" && exec "$@"', "hide"]


CASES = [
    Case("vm-no-command", [*LINKLAB, "vm"], ("no command given",)),
    Case("vm-unknown-kernel", [*LINKLAB, "vm", "--kernel", "9.99", "--", "true"],
         ("--kernel 9.99", "no such kernel")),
    Case("vm-kernel-path-missing", [*LINKLAB, "vm", "--kernel", "/nonexistent/vmlinuz", "--",
                                    "true"], ("--kernel /nonexistent/vmlinuz",)),
    Case("vm-cpus-not-int", [*LINKLAB, "vm", "--cpus", "many", "--", "true"],
         ("--cpus", "invalid int value")),
    Case("report-missing-dir", [*LINKLAB, "report", "/nonexistent/results"],
         ("/nonexistent/results", "does not exist")),
    Case("report-not-a-dir", [*LINKLAB, "report", "/etc/hostname"],
         ("/etc/hostname", "not a directory")),
    Case("report-corrupt-meta", [*LINKLAB, "report", "{R}", "-o", "{T}/r.html"],
         ("meta.json", "not valid JSON"),
         lambda t: {"R": str(write_sample(t, "r", {"meta.json": "{\"schema\": 1,"}))}),
    Case("report-corrupt-parquet", [*LINKLAB, "report", "{R}", "-o", "{T}/r.html"],
         ("note: bench.parquet: cannot be read", "table skipped"), corrupt_parquet_only,
         note_ok=True),
    Case("report-corrupt-baseline", [*LINKLAB, "report", str(SAMPLE), "--baseline", "{B}",
                                     "-o", "{T}/r.html"], ("{B}/meta.json", "not valid JSON"),
         lambda t: {"B": str(write_sample(t, "b", {"meta.json": "[garbage"}))}),
    Case("report-baseline-wrong-schema", [*LINKLAB, "report", str(SAMPLE), "--baseline",
                                          "{B}", "-o", "{T}/r.html"], ("{B}/meta.json", "schema"),
         lambda t: {"B": str(write_sample(t, "b", {"meta.json": json.dumps({"schema": 999})}))}),
    Case("report-fail-on-syntax", [*LINKLAB, "report", str(SAMPLE), "--fail-on", "throughput:abc",
                                   "-o", "{T}/r.html"], ("--fail-on",)),
    Case("report-negative-threshold", [*LINKLAB, "report", str(SAMPLE), "--threshold", "-1",
                                       "-o", "{T}/r.html"], ("--threshold",)),
    Case("report-output-unwritable", [*LINKLAB, "report", str(SAMPLE), "-o",
                                      "/proc/linklab-drill/r.html"],
         ("cannot write", "/proc/linklab-drill")),
    Case("clean-unknown-option", [*LINKLAB, "clean", "--all"], ("unrecognized arguments: --all",)),
    Case("unknown-subcommand", [*LINKLAB, "nuke"], ("invalid choice: 'nuke'",)),
    Case("bench-fail-on-syntax", [*PYTEST, "-m", "bench", "--co", "--bench-baseline",
                                  str(SAMPLE), "--bench-fail-on", "throughput:abc"],
         ("--bench-fail-on",)),
    Case("bench-fail-on-unknown-metric", [*PYTEST, "-m", "bench", "--co", "--bench-baseline",
                                          str(SAMPLE), "--bench-fail-on", "bogus:5%"],
         ("--bench-fail-on", "bogus")),
    Case("bench-unknown-datapath", [*PYTEST, "-m", "bench", "--co", "--bench-datapaths",
                                    "veth,nosuch"], ("--bench-datapaths", "nosuch")),
    Case("bench-reps-zero", [*PYTEST, "-m", "bench", "--co", "--bench-reps", "0"],
         ("--bench-",)),
    Case("bench-baseline-missing", [*PYTEST, "-m", "bench", "--co", "--bench-baseline",
                                    "/nonexistent/base"], ("/nonexistent/base",)),
    Case("results-dir-unwritable", [*PYTEST, "tests/live/test_drill.py", "--results-dir",
                                    "/etc/hostname/results"], ("/etc/hostname/results",)),
    Case("scenario-file-via-pytest", [*PYTEST, "bench/test_bench.py", "--co", "--scenarios",
                                      "{DIR}"], ("{DIR}/bad.toml", "kind", "unknown kind"),
         bad_scenario_dir),
    Case("missing-iperf3", [*hide_tool("iperf3"), *PYTEST, "-m", "bench", "bench/test_bench.py",
                            "--bench-smoke", "-rs"], ("iperf3", "Debian package iperf3"),
         skip_ok=True),
    Case("missing-kea", [*hide_tool("kea-dhcp4"), *PYTEST, "tests/live/test_dhcp.py", "-rs", "-k",
                         "dhcp-C-macvlan-kea-match-client-id-udhcpc"],
         ("kea-dhcp4", "Debian package kea-dhcp4-server"), skip_ok=True),
]


def _fill(text: str, subst: dict[str, str]) -> str:
    for k, v in subst.items():
        text = text.replace("{" + k + "}", v)
    return text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_option_or_file(case: Case, tmp_path: Path) -> None:
    subst = {"T": str(tmp_path)} | (case.setup(tmp_path) if case.setup else {})
    argv = [_fill(a, subst) for a in case.argv]
    words = [_fill(w, subst) for w in case.words]
    records = tmp_path / "records"
    records.mkdir()
    with open(tmp_path / "out.txt", "w") as log:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ | {"LINKLAB_RECORD_DIR": str(records)},
                                start_new_session=True)
    markers: set[str] = set()       # every run the command started, seen while it lives
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        markers |= {f.name.split(".jsonl")[0] for f in records.glob("*.jsonl*")}
        time.sleep(0.005)
    proc.wait(timeout=max(1, deadline - time.monotonic()))
    out = (tmp_path / "out.txt").read_text()
    # nothing of the command's session may outlive it
    try:
        os.killpg(proc.pid, 0)
        alive = True
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        alive = False
    assert not alive, f"{case.id}: processes of the command outlived it"
    for w in words:
        assert w in out, f"{case.id}: message does not name {w!r}:\n{out[-1500:]}"
    if case.skip_ok and proc.returncode == 0:
        assert "SKIPPED" in out, f"{case.id}: exit 0 without a skip:\n{out[-1500:]}"
    elif case.note_ok and proc.returncode == 0:
        pass                                  # rendered the rest; the note named the file
    else:
        assert proc.returncode != 0, f"{case.id}: exit status 0:\n{out[-1500:]}"
        assert "Traceback (most recent call last)" not in out, \
            f"{case.id}: a traceback instead of one clear message:\n{out[-3000:]}"
    assert not list(records.iterdir()), f"{case.id}: records left: {list(records.iterdir())}"
    left = [n for n in os.listdir("/run/netns") for m in markers if n.startswith(f"ll{m}-")]
    left += [str(p) for m in markers for p in Path("/tmp").glob(f"linklab-{m}-*")]
    assert not left, f"{case.id}: left {left}"


