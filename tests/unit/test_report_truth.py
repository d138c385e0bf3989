"""The truth-table section from saved connectivity rows, without a browser: one table per
scenario, family and probe; sources x destinations in a readable order; mismatches marked;
a large table keeps only its rows with a mismatch; the pairs stay out of the datapath matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linklab.report.aggregate import load_results
from linklab.report.render import render
from linklab.report.sections import truth
from linklab.report.sections.connectivity import connectivity_matrices

KERNEL = "6.18.0-test"


def row(src: str, dst: str, expected: str, observed: str, proto: str = "tcp",
        port: int | None = 80, origin: str = "pairs", family: str = "v4") -> dict:
    probe = proto if port is None else f"{proto}-{port}"
    return {"scenario": "tenants", "kind": "bridge", "mode": None, "flag": None,
            "family": family, "check": f"{src}-to-{dst}-{probe}", "expected": expected,
            "observed": observed, "outcome": "passed" if expected == observed else "failed",
            "reason": "tenants are isolated", "detail": "", "kernel": KERNEL, "virt": "none",
            "src": src, "dst": dst, "proto": proto, "port": port, "origin": origin}


def results_dir(tmp_path: Path, rows: list[dict]) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    (d / "meta.json").write_text(json.dumps({"kernel": KERNEL, "virt": "none", "schema": 1}))
    fixed = {**row("", "", "pass", "pass"), "check": "child-to-child", "src": None,
             "dst": None, "proto": None, "port": None, "origin": None}
    (d / "connectivity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [fixed, *rows]))
    return d


def pairs(mismatch: tuple[str, str] | None = None, n: int = 3) -> list[dict]:
    names = [f"c{i}" for i in range(1, n + 1)]
    out = []
    for s in names:
        for d in [*[x for x in names if x != s], "host", "upstream", "remote"]:
            want = "pass" if d in ("upstream", "remote") else "blocked"
            got = ("pass" if want == "blocked" else "blocked") if (s, d) == mismatch else want
            out.append(row(s, d, want, got))
    return out


def test_one_table_per_probe_with_mismatches_marked(tmp_path: Path) -> None:
    rows = pairs(mismatch=("c10", "c2"), n=10) + [
        row("c2", "c1", "blocked", "blocked", proto="icmp", port=None, origin="check")]
    res = load_results(results_dir(tmp_path, rows))
    (leg,) = truth.truth_legs(res)
    by_probe = {t.probe: t for t in leg.tables}
    assert set(by_probe) == {"tcp/80", "icmp"}
    t = by_probe["tcp/80"]
    assert t.sources == [f"c{i}" for i in range(1, 11)]                  # c2 before c10
    assert t.destinations[-3:] == ["host", "upstream", "remote"]
    assert t.mismatches == 1 and t.cell("c10", "c2").text == "✗"
    assert "expected blocked, observed pass" in t.cell("c10", "c2").title
    assert t.cell("c1", "remote").cls == "pass" and t.cell("c1", "c2").cls == "isolated"
    assert t.cell("c1", "c1") is None
    assert t.counts == {"pass": 20, "isolated": 99, "fail": 1, "skipped": 0}
    # the pairs are not columns of the datapath matrix; the [[check]] flow and the fixed
    # check are
    (m,) = connectivity_matrices(res)
    assert [c for c, _f in m.columns] == ["child-to-child", "c2-to-c1-icmp"]


def test_a_large_table_keeps_its_mismatched_rows(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(truth, "MAX_ROWS", 4)
    res = load_results(results_dir(tmp_path, pairs(mismatch=("c3", "host"), n=6)))
    (t,) = truth.truth_legs(res)[0].tables
    assert t.sources == ["c3"] and t.hidden == 5 and t.mismatches == 1


def test_the_page_has_the_truth_section_only_when_there_are_own_checks(tmp_path: Path) -> None:
    out = tmp_path / "index.html"
    render(load_results(results_dir(tmp_path, pairs(mismatch=("c1", "c2")))), out)
    html = out.read_text()
    assert 'id="truth"' in html and 'id="truth-tenants-v4-tcp-80"' in html
    assert html.count('class="cell fail"') == 1
    (tmp_path / "plain").mkdir()
    out2 = tmp_path / "plain" / "index.html"
    render(load_results(results_dir(tmp_path / "plain", [])), out2)
    assert 'id="truth"' not in out2.read_text()


def test_the_summary_counts_the_pairs_and_names_the_mismatched(tmp_path: Path) -> None:
    from linklab.report.view import build

    view = build(load_results(results_dir(tmp_path, pairs(mismatch=("c2", "host")))))
    (own,) = [c for c in view.section("summary").cells if c.table.startswith("own checks")]
    assert (own.as_documented, own.failed, own.skipped) == (14, 1, 0)
    assert own.failures == ["tenants v4 tcp/80 c2 → host"]
