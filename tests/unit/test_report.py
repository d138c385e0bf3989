"""`linklab report`: aggregation, comparison and rendering from the committed results fixture,
and every kind of bad input giving a clear message (never a traceback)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from linklab.cli import main
from linklab.compare import Delta, Threshold, judge
from linklab.report.aggregate import (
    Rules,
    bench_summary,
    compare,
    latency_parts,
    load_results,
    machine_mismatch,
    with_efficiency,
)
from linklab.report.render import render
from linklab.report.view import build
from linklab.stats import summarise
from tests import DATA

SAMPLE = DATA / "results-sample"


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """A private copy of the fixture, safe to alter."""
    return Path(shutil.copytree(SAMPLE, tmp_path / "20250101T100000Z-sample"))


def _scale_bench(run: Path, datapath: str, metric: str, factor: float) -> None:
    for part in run.glob("bench*.jsonl"):
        rows = [json.loads(line) for line in part.read_text().splitlines()]
        for row in rows:
            if row["datapath"] == datapath and row["metric"] == metric and row["value"] is not None:
                row["value"] *= factor
        part.write_text("".join(json.dumps(r) + "\n" for r in rows))


# ---- statistics and aggregation -------------------------------------------------------------

def test_latency_parts_reads_protocol_from_direction_or_name() -> None:
    assert latency_parts("udp_oneway_latency_p999_us", "pingpong") == ("udp", "p99.9")
    assert latency_parts("latency_p50_us", "tcp") == ("tcp", "p50")
    assert latency_parts("latency_p90_us", "forward") == ("", "p90")


def test_legs_split_host_from_vm() -> None:
    res = load_results(SAMPLE)
    legs = res.legs("connectivity")
    assert [leg.is_host for leg in legs] == [True, False]
    assert legs[0].kernel == res.meta["kernel"] and legs[1].virt == "tcg"
    host = res.leg_rows("connectivity", legs[0])
    assert set(host["virt"]) == {"none"} and "ipvlan" in set(host["kind"])  # skipped on host
    assert set(res.leg_rows("connectivity", legs[1])["kind"]) == {"ipvlan"}


def test_efficiency_is_relative_to_loopback_of_same_leg() -> None:
    summary = with_efficiency(bench_summary(load_results(SAMPLE).tables["bench"]))
    thr = summary[summary["section"] == "throughput"]
    loop = thr[thr["datapath"] == "loopback"]
    assert (loop["efficiency"] == 1.0).all()
    forward_x1 = thr[(thr["direction"] == "forward") & (thr["streams"] == "1")]
    veth = forward_x1[forward_x1["datapath"] == "veth"]
    host_loop = forward_x1[(forward_x1["datapath"] == "loopback") & (forward_x1["virt"] == "none")]
    assert veth["efficiency"].iloc[0] == pytest.approx(veth["median"].iloc[0]
                                                       / host_loop["median"].iloc[0])
    assert (thr["n"] == 5).all() and (thr["ci_low"] <= thr["median"]).all()


def test_error_rows_are_not_averaged() -> None:
    summary = bench_summary(load_results(SAMPLE).tables["bench"])
    assert summary[(summary["datapath"] == "macvlan") & (summary["mode"] == "private")].empty


# ---- comparison -----------------------------------------------------------------------------

def _delta(metric: str, cur: list[float], base: list[float]) -> Delta:
    return Delta(("none", "veth", "", "", "v4", "forward", 1, metric, ""), summarise(cur),
                 summarise(base), judge([(cur, base, metric)])[0], ())


def _five(centre: float) -> list[float]:
    return [centre - 1.0, centre - 0.5, centre, centre + 0.5, centre + 1.0]


def test_rules_need_threshold_and_a_significant_test() -> None:
    rules = Rules(5.0, (Threshold("latency_p99", 20.0),))
    base = _five(100.0)
    assert rules.verdict(_delta("throughput_bps", _five(90.0), base)) == "regressed"
    assert rules.verdict(_delta("throughput_bps", [60.0, 90.0, 120.0, 101.0, 80.0], base)) == "same"
    assert rules.verdict(_delta("throughput_bps", _five(97.0), base)) == "same"   # < 5 %
    assert rules.verdict(_delta("throughput_bps", _five(110.0), base)) == "improved"
    assert rules.verdict(_delta("tcp_oneway_latency_p50_us", _five(110.0), base)) == "regressed"
    assert rules.verdict(_delta("tcp_oneway_latency_p99_us", _five(110.0), base)) == "same"
    assert rules.verdict(_delta("tcp_oneway_latency_p99_us", _five(130.0), base)) == "regressed"
    assert rules.verdict(_delta("cpu_s_per_gbit", _five(80.0), base)) == "improved"
    # a one-repetition side (the bench smoke) is never a regression, however far off
    assert rules.verdict(_delta("throughput_bps", [50.0], base)) == "cannot"


def test_degraded_datapath_is_caught(sample: Path) -> None:
    baseline = load_results(SAMPLE)
    _scale_bench(sample, "veth", "throughput_bps", 0.7)
    result = compare(load_results(sample), baseline, Rules())
    regressed = result[result["verdict"] == "regressed"]
    assert set(regressed["datapath"]) == {"veth"} and set(regressed["metric"]) == {"throughput_bps"}
    assert len(regressed) == 4  # both directions, 1 and 4 streams
    assert (result[result["datapath"] != "veth"]["verdict"] == "same").all()
    assert set(result["role"]) == {"host", "vm"}


def test_machine_mismatch_names_what_differs() -> None:
    meta = load_results(SAMPLE).meta
    assert machine_mismatch(meta, dict(meta)) == []
    other = dict(meta, kernel="6.1.0-28-amd64", cores=8)
    diff = machine_mismatch(meta, other)
    assert any("kernel differs: baseline 6.1.0-28-amd64" in d for d in diff)
    assert any("cores" in d for d in diff)


# ---- rendering ------------------------------------------------------------------------------

def test_report_is_self_contained_with_every_section(tmp_path: Path) -> None:
    out = render(load_results(SAMPLE), tmp_path / "index.html")
    html = out.path.read_text()
    for section in ("environment", "connectivity", "dhcp", "throughput", "latency", "cpu"):
        assert f'<section id="{section}">' in html
    assert "<script" not in html.lower() and "<link" not in html.lower() and "@import" not in html
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html), "external reference"
    assert set(re.findall(r"url\((.)", html)) <= {"#"}, "url() pointing outside the page"
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate element ids (clip paths of two charts?)"
    assert html.count('class="chart"') == out.charts == 10
    assert html.count('<table class="matrix"') == 2
    assert "kernel lacks ipvlan (CONFIG_IPVLAN)" in html  # a skip shows its reason
    assert "Test runs (JUnit XML)" in html and "6.12.48+deb13-amd64" in html
    assert "junit-host.xml: 1 failed, 0 error(s) of 120 tests" in html


def test_vm_figures_stay_in_their_own_block(tmp_path: Path) -> None:
    html = render(load_results(SAMPLE), tmp_path / "index.html").path.read_text()
    throughput = html[html.index('<section id="throughput">'):html.index('<section id="latency">')]
    host, vm = throughput.split("VM leg</span>", 1)
    assert "ipvlan l2 bridge" not in host and "macvlan bridge" not in vm


def test_baseline_section_highlights_regressions_and_machine_mismatch(sample: Path,
                                                                      tmp_path: Path) -> None:
    meta = json.loads((sample / "meta.json").read_text())
    for part in sample.glob("bench*.jsonl"):  # the same run on another kernel
        part.write_text(part.read_text().replace(meta["kernel"], "6.1.0-28-amd64"))
    meta["kernel"] = "6.1.0-28-amd64"
    (sample / "meta.json").write_text(json.dumps(meta))
    for proto in ("tcp", "udp"):
        _scale_bench(sample, "bridge", f"{proto}_oneway_latency_p99_us", 1.5)
    out = tmp_path / "r" / "index.html"
    assert main([ "report", str(sample), "--baseline", str(SAMPLE), "-o", str(out)]) == 0
    html = out.read_text()
    assert '<section id="baseline">' in html and "Different machine or kernel" in html
    section = html[html.index('<section id="baseline">'):html.index('<section id="connectivity">')]
    assert section.count('<tr class="regressed">') == 2  # TCP and UDP p99 of the bridge
    top = html[html.index('<section id="summary">'):html.index('<section id="environment">')]
    assert "<b>2 regression(s)</b>" in top and top.count('<li class="regressed">') == 2
    assert "kernel differs: baseline 6.18.44-linklab, this run 6.1.0-28-amd64" in html


def test_default_output_and_latest_link(sample: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(sample)]) == 0
    out = tmp_path / "reports" / sample.name / "index.html"
    assert out.is_file()
    latest = tmp_path / "reports" / "latest"
    assert latest.is_symlink() and (latest / "index.html").samefile(out)
    printed = capsys.readouterr().out.strip()
    assert printed.endswith(str(Path("reports") / sample.name / "index.html"))
    assert main(["report", str(sample)]) == 0  # re-render replaces the link
    assert latest.is_symlink()


def test_finalised_tables_without_jsonl_are_read(sample: Path, tmp_path: Path) -> None:
    from linklab.results import RunDir

    run = RunDir(sample)
    for table in ("connectivity", "dhcp", "bench"):
        run.finalise(table)
    for part in sample.glob("*.jsonl"):
        part.unlink()
    res = load_results(sample)
    assert len(res.tables["bench"]) == len(load_results(SAMPLE).tables["bench"])
    assert not any("not finalised" in n for n in res.notes)


# ---- bad input ------------------------------------------------------------------------------

def _report(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["report", *args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_missing_dir_is_a_clear_error(tmp_path: Path, capsys) -> None:
    rc, _, err = _report([str(tmp_path / "nope"), "-o", str(tmp_path / "x.html")], capsys)
    assert rc == 2 and "nope does not exist" in err
    assert not (tmp_path / "x.html").exists()


def test_dir_without_results_is_a_clear_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "junk").mkdir()
    rc, _, err = _report([str(tmp_path / "junk"), "-o", str(tmp_path / "x.html")], capsys)
    assert rc == 2 and "holds no linklab results" in err


def test_unknown_schema_is_a_clear_error(sample: Path, tmp_path: Path, capsys) -> None:
    meta = json.loads((sample / "meta.json").read_text())
    meta["schema"] = 99
    (sample / "meta.json").write_text(json.dumps(meta))
    rc, _, err = _report([str(sample), "-o", str(tmp_path / "x.html")], capsys)
    assert rc == 2 and "meta.json: schema version 99 is not known" in err


def test_bad_baseline_is_named(sample: Path, tmp_path: Path, capsys) -> None:
    (sample / "meta.json").write_text("{\"schema\": 1, ")
    rc, _, err = _report([str(SAMPLE), "--baseline", str(sample),
                          "-o", str(tmp_path / "x.html")], capsys)
    assert rc == 2 and f"{sample / 'meta.json'}: not valid JSON" in err


def test_empty_run_renders_what_is_missing(tmp_path: Path, capsys) -> None:
    run = tmp_path / "20250101T000000Z-empty"
    run.mkdir()
    (run / "meta.json").write_text(json.dumps({"schema": 1, "kernel": "6.18.0", "virt": "none"}))
    out = tmp_path / "x.html"
    rc, _, err = _report([str(run), "-o", str(out)], capsys)
    assert rc == 0 and "bench: no rows recorded" in err
    html = out.read_text()
    assert "This run recorded no rows at all" in html
    assert "No connectivity rows in this run" in html and "No benchmark rows in this run" in html
    assert "field(s) cpu_model, cores, tools, git_commit, started, ended missing" in html


def test_partial_run_renders_the_rows_it_has(sample: Path, tmp_path: Path, capsys) -> None:
    (sample / "meta.json").unlink()
    for part in [*sample.glob("bench*.jsonl"), sample / "bench.parquet"]:
        part.unlink()
    with open(sample / "dhcp.jsonl", "a") as fh:
        fh.write('{"scenario": "cut-sho')  # the run was killed mid-write
    out = tmp_path / "x.html"
    rc, _, _ = _report([str(sample), "-o", str(out)], capsys)
    assert rc == 0
    html = out.read_text()
    assert "meta.json missing" in html and "dhcp.jsonl: 1 unreadable line(s) skipped" in html
    assert html.count('<table class="matrix"') == 2 and "No benchmark rows" in html


def test_cli_error_has_no_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "linklab.cli", "report", str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("linklab report: ") and proc.stdout == ""


def test_bad_fail_on_is_named(tmp_path: Path, capsys) -> None:
    rc, _, err = _report([str(SAMPLE), "--baseline", str(SAMPLE), "--fail-on", "throughput=5",
                          "-o", str(tmp_path / "x.html")], capsys)
    assert rc == 2 and "--fail-on: 'throughput=5' is not METRIC:PCT%" in err


def test_dhcp_table_is_a_coloured_matrix_per_leg(sample: Path, tmp_path: Path) -> None:
    part = sample / "dhcp.jsonl"
    rows = [json.loads(line) for line in part.read_text().splitlines()]
    rows[0] |= {"observed": "distinct-leases", "outcome": "failed", "detail": "two leases"}
    part.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (sample / "dhcp.parquet").unlink()
    html = render(load_results(sample), tmp_path / "index.html").path.read_text()
    dhcp = html[html.index('<section id="dhcp">'):html.index('<section id="throughput">')]
    assert dhcp.count('<table class="matrix dhcp"') == 2
    assert dhcp.count('class="cell fail"') == 1
    assert f"failed: expected {rows[0]['expected']}, observed distinct-leases" in dhcp
    assert "leases the servers recorded" in dhcp


# ---- the view model: verdicts without HTML ---------------------------------------------------

def test_view_model_orders_sections_summary_first() -> None:
    v = build(load_results(SAMPLE))
    assert [s.id for s in v.sections] == ["summary", "which", "cost", "environment", "connectivity",
                                          "dhcp", "throughput", "latency", "cpu", "anatomy"]
    assert v.section("baseline") is None and len(v.charts) == 10


def test_summary_ranks_datapaths_with_verdicts() -> None:
    summ = build(load_results(SAMPLE)).section("summary")
    host = [r for r in summ.rankings if r.leg.is_host and r.title.startswith("TCP throughput, 1")]
    (rk,) = host
    medians = [r.median for r in rk.rows]
    assert medians == sorted(medians, reverse=True) and rk.rows[0].place == 1
    assert all(r.verdict is not None for r in rk.rows[:-1]) and rk.rows[-1].verdict is None
    kinds = {r.verdict.kind for r in rk.rows[:-1]}
    assert kinds <= {"better", "same"}        # best first: never "worse than the next one"
    lat = next(r for r in summ.rankings if r.title.startswith("TCP latency"))
    assert [r.median for r in lat.rows] == sorted(r.median for r in lat.rows)  # lower first
    cells = {c.table: c for c in summ.cells if c.leg.is_host}
    assert cells["connectivity"].as_documented > 0 and summ.regressions is None
    assert not summ.load_recorded and summ.disturbed == 0   # the fixture predates the columns


def test_a_smoke_baseline_cannot_judge_and_never_regresses(sample: Path, tmp_path: Path) -> None:
    """The issue's false alarm: a 1-repetition smoke run as baseline of a real run."""
    smoke = Path(shutil.copytree(SAMPLE, tmp_path / "smoke"))
    for part in smoke.glob("bench*.jsonl"):
        rows = [json.loads(line) for line in part.read_text().splitlines()]
        part.write_text("".join(json.dumps(r) + "\n" for r in rows if r["repetition"] == 1))
    _scale_bench(smoke, "veth", "throughput_bps", 1.5)   # the smoke run happened to be fast
    v = build(load_results(sample), load_results(smoke), Rules(5.0))
    comp = v.section("baseline")
    assert comp.rows and {r["verdict"] for r in comp.rows} == {"cannot"}
    assert all(r["verdict_text"] == "cannot judge (n=1)" for r in comp.rows)
    assert v.section("summary").regressions == []


def test_other_figures_fold_away(tmp_path: Path) -> None:
    html = render(load_results(SAMPLE), tmp_path / "index.html").path.read_text()
    assert html.count('<details class="other"><summary>Other figures') == 2   # host and VM leg
    assert html.index('<section id="summary">') < html.index('<section id="environment">')
    assert "What this run says" in html and "How to read a verdict" in html


def test_a_section_is_a_builder_and_a_template(tmp_path: Path, monkeypatch) -> None:
    """The hook other report sections use: register a builder, add templates/sections/<id>.html."""
    from linklab.report import view

    monkeypatch.setattr(view, "SECTIONS", list(view.SECTIONS))
    view.register(view.SectionDef("dhcp", "nothing", lambda i: None))  # None: left out
    view.register(view.SectionDef("extra", "extra", lambda i: 42, after="summary"))
    v = view.build(load_results(SAMPLE))
    assert [s.id for s in v.sections][:3] == ["summary", "extra", "which"]
    assert "dhcp" not in [s.id for s in v.sections] and v.section("extra") == 42
