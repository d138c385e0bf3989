"""The drill's generated-input and hostile-strings lines: the JUnit figures they read and the
summary rows they print (the runs themselves: python -m linklab.drill --only generated,hostile)."""

from __future__ import annotations

from pathlib import Path

import pytest

from linklab.drill.inputs import junit_cases
from linklab.drill.main import print_summary

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase name="test_a"><properties><property name="cases" value="1000"/></properties></testcase>
<testcase name="test_b"><properties><property name="cases" value="7"/></properties>
<failure message="Hang: hang: the case ran over 20 s">trace</failure></testcase>
<testcase name="test_c"><skipped message="no chromium"/></testcase>
</testsuite></testsuites>"""


def test_junit_cases_reads_properties_failures_and_skips(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT)
    a, b, c = junit_cases(str(path))
    assert (a.name, a.failure, a.properties) == ("test_a", None, {"cases": "1000"})
    assert b.failure is not None and "hang:" in b.failure and b.properties["cases"] == "7"
    assert c.skipped and c.failure is None


@pytest.mark.parametrize("gen,hostile,ok", [
    ({"cases": 7000, "tracebacks": 0, "hangs": 0, "wall_s": 31.0},
     {"scripts_run": 0, "shown": "8/8", "wall_s": 5.0, "passed": True}, True),
    ({"cases": 7000, "tracebacks": 1, "hangs": 0, "wall_s": 31.0}, None, False),
    ({"cases": 7000, "tracebacks": 0, "hangs": 1, "wall_s": 31.0}, None, False),
    (None, {"scripts_run": 1, "shown": "8/8", "wall_s": 5.0, "passed": False}, False),
    (None, {"scripts_run": None, "shown": "?", "wall_s": 1.0, "passed": False}, False),
], ids=["clean", "traceback", "hang", "script-ran", "skipped"])
def test_summary_lines(gen: dict | None, hostile: dict | None, ok: bool,
                       capsys: pytest.CaptureFixture[str]) -> None:
    summary = {"host_diff": [], "uplink_packets": 0, "wall_s": 40.0}
    summary.update({k: v for k, v in (("generated", gen), ("hostile", hostile)) if v})
    assert print_summary(summary) is ok
    out = capsys.readouterr().out
    if gen:
        assert f"{gen['cases']} / {gen['tracebacks']} / {gen['hangs']} (31 s)" in out
    if hostile:
        assert f"{hostile['scripts_run']} / {hostile['shown']}" in out


@pytest.mark.parametrize("disk,ok", [
    ({"tried": 3, "passed": 3, "rows_kept": [19, 16, 12], "wall_s": 17.0}, True),
    ({"tried": 3, "passed": 2, "rows_kept": [19, 0, 12], "wall_s": 17.0}, False),
    ({"tried": 0, "passed": 0, "rows_kept": [], "wall_s": 1.0}, False),
], ids=["clean", "one-failed", "not-run"])
def test_disk_summary_line(disk: dict, ok: bool, capsys: pytest.CaptureFixture[str]) -> None:
    assert print_summary({"host_diff": [], "uplink_packets": 0, "wall_s": 9.0,
                          "disk": disk}) is ok
    assert f"{disk['passed']}/{disk['tried']}, rows kept" in capsys.readouterr().out
