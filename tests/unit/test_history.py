"""`linklab report --history DIR`: key figures across runs, kernel/machine changes marked."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from linklab.cli import main
from linklab.report import history
from tests import DATA

SAMPLE = DATA / "results-sample"


def make_runs(root: Path, n: int = 4) -> Path:
    """n copies of the sample a day apart, throughput drifting down 3 % a run, the kernel
    changing at the third run; one directory that is not a run at all."""
    for i in range(n):
        run = Path(shutil.copytree(SAMPLE, root / f"2025010{i + 1}T100000Z-night"))
        (run / "bench.parquet").unlink()
        meta = json.loads((run / "meta.json").read_text())
        meta["started"] = f"2025-01-0{i + 1}T10:00:00Z"
        meta["run_id"] = run.name
        old = meta["kernel"]
        if i >= 2:
            meta["kernel"] = "6.19.1-linklab"
        (run / "meta.json").write_text(json.dumps(meta))
        for part in run.glob("bench*.jsonl"):
            rows = [json.loads(line) for line in part.read_text().splitlines()]
            for r in rows:
                if r["kernel"] == old and i >= 2:
                    r["kernel"] = meta["kernel"]
                if r["metric"] == "throughput_bps" and r["value"] is not None:
                    r["value"] *= 0.97 ** i
            part.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "scratch").mkdir()
    return root


def test_history_follows_a_drift_and_marks_the_kernel_change(tmp_path: Path) -> None:
    view = history.build(make_runs(tmp_path / "results"))
    assert [r.run_id for r in view.runs] == [f"2025010{i}T100000Z-night" for i in (1, 2, 3, 4)]
    assert view.changes == [(2, "kernel 6.18.44-linklab → 6.19.1-linklab")]
    table = history.frame(view)
    veth = table[(table["figure"] == "TCP throughput, 1 stream") & (table["datapath"] == "veth")]
    assert len(veth) == 4 * veth["family"].nunique()
    medians = veth.sort_values("run_id")["median"].tolist()
    assert medians == sorted(medians, reverse=True)              # the drift shows
    assert medians[-1] == pytest.approx(medians[0] * 0.97 ** 3)
    assert "ipvlan" not in set(table["datapath"].str.split().str[0])   # VM leg kept out
    assert {m.key for m in view.metrics} >= {"throughput_bps", "tcp_oneway_latency_p50_us"}


def test_history_cli_writes_a_self_contained_page(tmp_path: Path, capsys) -> None:
    root = make_runs(tmp_path / "results", 3)
    out = tmp_path / "h" / "index.html"
    assert main(["report", "--history", str(root), "-o", str(out)]) == 0
    html = out.read_text()
    assert "<script" not in html.lower() and "http" not in html.replace("http://www.w3.org", "")
    assert html.count('class="chart"') >= 3 and html.count('class="changed"') == 1
    assert "3 runs, " in capsys.readouterr().out


def test_history_needs_two_runs(tmp_path: Path, capsys) -> None:
    shutil.copytree(SAMPLE, tmp_path / "only")
    assert main(["report", "--history", str(tmp_path), "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert "1 run(s) with benchmark figures; a history needs at least two" in err
    assert main(["report", "--history", str(tmp_path / "nope")]) == 2
