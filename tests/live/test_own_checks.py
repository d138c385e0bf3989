"""The scenario's own checks, live: the 3-tenant example (examples/own-tests, isolation stated
only in its file) passes from outside the repo with --scenarios; a wrong expectation fails
and names its check; a wrong truth-table rule names each mismatched pair; a host's nftables
ruleset nft refuses is a build error naming the host."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from linklab.build import BuildError, build
from linklab.model import load_text
from linklab.ownership import Run
from tests import REPO

EXAMPLE = REPO / "examples" / "own-tests" / "scenarios" / "three-tenants.toml"


def run_example(tmp_path: Path, run_pytest: Callable[..., subprocess.CompletedProcess],
                text: str | None = None) -> tuple[subprocess.CompletedProcess, str]:
    """pytest -m connectivity over the example (or ``text``) from a directory outside the repo."""
    path = EXAMPLE
    if text is not None:
        path = tmp_path / "scenarios" / "three-tenants.toml"
        path.parent.mkdir()
        path.write_text(text)
    work = tmp_path / "work"
    work.mkdir()
    done = run_pytest(work, "-p", "no:xdist", "-m", "connectivity", "-v", f"--scenarios={path}",
                      f"--results-dir={tmp_path / 'results'}")
    return done, done.stdout + done.stderr


@pytest.mark.connectivity
def test_the_three_tenant_example_passes_from_outside_the_repo(tmp_path: Path,
                                                               run_pytest) -> None:
    done, out = run_example(tmp_path, run_pytest)
    assert done.returncode == 0, out[-3000:]
    passed = set(re.findall(r"test_cell\[([\w-]+)\] PASSED", out))
    assert {"three-tenants-v4-b1-to-a1-tcp-8080", "three-tenants-v6-b2-to-c1-tcp-443",
            "three-tenants-v4-b1-to-c1-udp-53", "three-tenants-v4-c2-to-b2-icmp",
            "three-tenants-v4-pairs-icmp", "three-tenants-v6-pairs-udp-53"} <= passed, out[-3000:]
    assert len(passed) == 40
    rows = [json.loads(line) for f in (tmp_path / "results").glob("*/connectivity.*.jsonl")
            for line in f.read_text().splitlines()]
    blocked = {(r["src"], r["dst"]) for r in rows if r["origin"] == "pairs"
               and r["proto"] == "icmp" and r["observed"] == "blocked"}
    assert ("a1", "b1") in blocked and ("a1", "a2") not in blocked


@pytest.mark.connectivity
def test_a_wrong_expectation_fails_and_names_the_check(tmp_path: Path, run_pytest) -> None:
    text = EXAMPLE.read_text()
    wrong = text.replace('expect = "blocked"\nwhy = "tenant b may not reach tenant a"',
                         'expect = "pass"\nwhy = "tenant b may not reach tenant a"', 1)
    wrong = wrong.replace('gateway = "pass"\nremote', 'gateway = "blocked"\nremote', 1)
    assert wrong.count('"blocked"') == text.count('"blocked"')   # one of each flipped
    done, out = run_example(tmp_path, run_pytest, wrong)
    assert done.returncode == 1, out[-3000:]
    failed = sorted(set(re.findall(r"test_cell\[([\w-]+)\] FAILED", out)))
    assert failed == ["three-tenants-v4-b1-to-a1-tcp-8080", "three-tenants-v4-pairs-icmp",
                      "three-tenants-v4-pairs-udp-53", "three-tenants-v6-b1-to-a1-tcp-8080",
                      "three-tenants-v6-pairs-icmp", "three-tenants-v6-pairs-udp-53"], out[-3000:]
    assert "three-tenants-v4-b1-to-a1-tcp-8080: expected pass (tenant b may not reach tenant " \
           "a); observed blocked" in out
    assert re.search(r"three-tenants-v4-pairs-icmp: expected truth-table .*observed mismatch: "
                     r"6 of 48 pairs: a1-to-upstream-icmp: expected blocked, observed pass", out)


def test_a_ruleset_nft_refuses_is_a_build_error_naming_the_host() -> None:
    text = EXAMPLE.read_text().replace("policy drop;", "policy maybe;", 1)
    sc = load_text(text, "three-tenants.toml")
    run = Run()
    try:
        with pytest.raises(BuildError, match=r"(?s)^three-tenants: host: nftables: "
                                             r".*syntax error.*maybe"), build(sc, run):
            pass
    finally:
        run.close()
