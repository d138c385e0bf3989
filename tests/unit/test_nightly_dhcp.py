"""The night's two-machine DHCP table (linklab.nightly.dhcp, ci/nightly's two_host_dhcp):
split cells paired with the same cells run inside one node, from the rows both wrote."""

from __future__ import annotations

import json
from pathlib import Path

from linklab.nightly import dhcp
from linklab.results import RunDir

STAMP = "20261206T150000Z"


def _row(setup: str, server: str, observed: str, outcome: str = "passed",
         clients_kernel: str = "") -> dict:
    return {"setup": setup, "scenario": "dhcp-twohost-ipvlan-l2", "server_option": server,
            "client": "udhcpc", "expected": "distinct [c1 c2]", "observed": observed,
            "outcome": outcome, "kernel": "6.1.0-57-amd64", "clients_kernel": clients_kernel}


def _write(run: Path, rows: list[dict], torn: bool = False) -> None:
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (run / "dhcp.jsonl").write_text(text + ('{"setup": "B", "scen' if torn else ""))


def _night(tmp_path: Path, split: list[dict], a: list[dict], b: list[dict]) -> Path:
    night = tmp_path / "nights" / STAMP
    _write(night / "node-a" / "results" / f"{STAMP}-two-host", split, torn=True)
    _write(night / "node-a" / "results" / f"{STAMP}-node-a", a)
    _write(night / "node-b" / "results" / f"{STAMP}-node-b", b)
    return night


def test_split_cells_pair_with_the_one_machine_runs_and_a_difference_is_counted(
        tmp_path: Path) -> None:
    night = _night(tmp_path,
                   [_row("B", "dnsmasq-default", "distinct [c1 c2]", clients_kernel="6.1.0"),
                    _row("B", "kea-match-client-id", "none []", "failed", "6.1.0")],
                   [_row("B", "dnsmasq-default", "distinct [c1 c2]"),
                    _row("B", "kea-match-client-id", "distinct [c1 c2]")],
                   [_row("B", "dnsmasq-default", "distinct [c1 c2]")])
    split = RunDir(night / "node-a" / "results" / f"{STAMP}-two-host").rows("dhcp")
    assert len(split) == 2                          # the torn last line is skipped
    pairs = dhcp.pair(split, {n: RunDir(night / n / "results" / f"{STAMP}-{n}").rows("dhcp")
                              for n in ("node-a", "node-b")})
    by = {p.cell: p for p in pairs}
    same = by["B-dhcp-twohost-ipvlan-l2-dnsmasq-default-udhcpc"]
    differs = by["B-dhcp-twohost-ipvlan-l2-kea-match-client-id-udhcpc"]
    assert same.same is True and same.clients_kernel == "6.1.0"
    assert differs.same is False and differs.one_machine == {"node-a": "distinct [c1 c2]",
                                                             "node-b": ""}
    total = dhcp.summary(pairs)["total"]
    assert total == {"split": 2, "passed": 1, "failed": 1, "compared": 2, "differ": 1}
    text = dhcp.lines(pairs, ("node-a", "node-b"))
    assert text[2].endswith("DIFFERS") and "not run" in text[2]


def _junit(night: Path, cases: dict[str, str]) -> Path:
    """The two-host step's JUnit file: test name -> passed | failure | error."""
    junit = night / "node-a" / "results" / f"{STAMP}-two-host" / "junit-host.xml"
    body = "".join(f'<testcase name="{name}">' + ("" if what == "passed" else f'<{what} '
                   'message="x"/>') + "</testcase>" for name, what in cases.items())
    junit.write_text(f"<testsuites><testsuite>{body}</testsuite></testsuites>")
    return junit


def test_the_night_step_writes_the_table_and_fails_on_a_failed_split_cell(
        tmp_path: Path, ci_nightly, capsys) -> None:
    night = _night(tmp_path, [_row("B", "kea-match-client-id", "none []", "failed", "6.1")],
                   [_row("B", "kea-match-client-id", "distinct [c1 c2]")], [])
    _junit(night, {"test_dhcp[dhcp-B-twohost-ipvlan-l2-kea-match-client-id-udhcpc]": "failure",
                   "test_cell[twohost-bridge-v4-child-to-child]": "passed"})
    assert ci_nightly.two_host_dhcp(night) == ci_nightly.EXIT_FAILED
    saved = json.loads((night / "two-host-dhcp.json").read_text())
    assert saved["total"]["differ"] == 1 and saved["errors"] == [] and saved["tests"] == 1
    assert "DIFFERS" in (night / "two-host-dhcp.txt").read_text()
    assert "0 passed, 1 failed, 0 errors, 0 not run of 1 split tests" in capsys.readouterr().out


def test_a_split_test_that_failed_before_its_row_still_fails_the_step(
        tmp_path: Path, ci_nightly, capsys) -> None:
    """Its agent killed mid-cell: no row, but JUnit has the failure (a drill night printed
    '34 passed, 0 failed' over two such tests)."""
    night = _night(tmp_path, [_row("C", "dnsmasq-default", "distinct [none none]")], [], [])
    _junit(night, {"test_dhcp[dhcp-C-twohost-macvlan-dnsmasq-default-udhcpc]": "passed",
                   "test_cni_dhcp[dhcp-F-cni-twohost-macvlan-kea-match-client-id-cni-dhcp]":
                   "failure"})
    assert ci_nightly.two_host_dhcp(night) == ci_nightly.EXIT_FAILED
    assert "1 passed, 1 failed, 0 errors, 0 not run of 2 split tests" in capsys.readouterr().out


def test_an_errored_split_cell_breaks_the_step_and_no_dhcp_cell_is_no_verdict(
        tmp_path: Path, ci_nightly) -> None:
    night = _night(tmp_path, [], [], [])
    junit = _junit(night, {"test_dhcp[dhcp-B-x]": "error"})
    assert ci_nightly.two_host_dhcp(night) == ci_nightly.EXIT_BROKEN
    assert json.loads((night / "two-host-dhcp.json").read_text())["errors"] == [
        "test_dhcp[dhcp-B-x]"]
    junit.unlink()
    assert ci_nightly.two_host_dhcp(night) == ci_nightly.EXIT_PASSED
