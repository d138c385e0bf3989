"""The VM leg's JUnit files without a guest: the classname and name pytest's junitxml writes
for a node id, the replay of each case as pytest's reports (both against a real pytest
session's ``--junitxml`` file), and the guests' files merged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from linklab.vmleg.junit import case_reports, junit_key, junit_names, merge_junit, read_junit


def test_merge_junit_keeps_every_guests_cases_and_removes_the_parts(tmp_path: Path) -> None:
    for n in range(2):
        (tmp_path / f"vm-shard-k-{n}.xml").write_text(
            f'<testsuites><testsuite name="pytest" tests="1"><testcase classname="t" '
            f'name="c{n}" time="1.5"/></testsuite></testsuites>')
    into = tmp_path / "junit-vm-k.xml"
    merge_junit([tmp_path / "vm-shard-k-0.xml", tmp_path / "vm-shard-k-1.xml"], into)
    assert sorted(read_junit(into)) == ["t.c0", "t.c1"]
    assert [p.name for p in tmp_path.iterdir()] == [into.name]


JUNIT_SAMPLE = {   # a tiny suite: classes, nesting, a subdirectory, awkward parameter ids
    "test_top.py": '''
import pytest

def test_plain():
    pass

@pytest.mark.parametrize("x", ["v4-child-to-child", "a.b", "x::y", "a[1]", "sp ace"])
def test_param(x):
    pass

class TestOuter:
    def test_method(self):
        pass

    class TestInner:
        @pytest.mark.parametrize("n", [1, 2])
        def test_deep(self, n):
            pass
''',
    "sub/dir/test_nested.py": '''
import pytest

@pytest.mark.parametrize("n", [0], ids=["ipvlan-l2-bridge-v4-child-to-child"])
def test_cell(n):
    pass
''',
    "conftest.py": '''
import json

def pytest_collection_finish(session):
    with open("nodeids.json", "w") as fh:
        json.dump([item.nodeid for item in session.items], fh)
''',
}


def junit_session(tmp_path: Path, files: dict[str, str]) -> tuple[list[str], Path]:
    """Run ``files`` as a plain pytest session with ``--junitxml``: the node ids collected, in
    order (the sample's conftest writes them), and the JUnit file pytest wrote."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    "--junitxml=out.xml"], cwd=tmp_path, check=False, capture_output=True,
                   text=True, timeout=120,
                   env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    return json.loads((tmp_path / "nodeids.json").read_text()), tmp_path / "out.xml"


def test_junit_names_are_what_pytests_junitxml_writes(tmp_path: Path) -> None:
    """The classname and name derived from each node id are those a real ``--junitxml`` run
    wrote, in order, and the keys match :func:`read_junit`'s."""
    nodeids, junit = junit_session(tmp_path, JUNIT_SAMPLE)
    assert len(nodeids) == 10
    assert "sub/dir/test_nested.py::test_cell[ipvlan-l2-bridge-v4-child-to-child]" in nodeids
    written = [(case.get("classname"), case.get("name"))
               for case in ET.parse(junit).getroot().iter("testcase")]
    assert [junit_names(n) for n in nodeids] == written
    assert sorted(junit_key(n) for n in nodeids) == sorted(read_junit(junit))


OUTCOMES_SAMPLE = {
    "test_outcomes.py": '''
import pytest

@pytest.fixture
def broken_setup():
    raise RuntimeError("setup broke")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")

def test_pass(): pass
def test_fail(): assert 1 == 2
def test_skip(): pytest.skip("not here")
@pytest.mark.xfail(reason="known")
def test_xfail(): assert False
def test_setup_error(broken_setup): pass
def test_teardown_error(broken_teardown): pass
def test_fail_and_teardown_error(broken_teardown): assert 1 == 2
''',
    "conftest.py": JUNIT_SAMPLE["conftest.py"] + '''

seen = {}

def pytest_runtest_logreport(report):
    seen.setdefault(report.nodeid, []).append([report.when, report.outcome])

def pytest_sessionfinish(session):
    with open("reports.json", "w") as fh:
        json.dump(seen, fh)
''',
}


def test_replayed_reports_are_those_the_guest_made(tmp_path: Path) -> None:
    """Each JUnit case of a real session replays as the (when, outcome) reports pytest made
    for it: pass, fail, skip, xfail, a setup error, a teardown error after a pass and after a
    failure (a skip as a setup skip); a case the guest never wrote fails its call with the
    guest's problem."""
    nodeids, junit = junit_session(tmp_path, OUTCOMES_SAMPLE)
    made = json.loads((tmp_path / "reports.json").read_text())
    cases = read_junit(junit)
    assert len(nodeids) == 7
    # a skip replays as a setup skip: the JUnit file does not say which phase skipped
    made["test_outcomes.py::test_skip"] = [["setup", "skipped"], ["teardown", "passed"]]
    for nodeid in nodeids:
        replayed = case_reports(cases[junit_key(nodeid)], "", "test_outcomes.py", 1)
        assert [[when, outcome] for when, outcome, *_ in replayed] == made[nodeid], nodeid
    missing = case_reports(None, "guest 1 panicked", "t.py", 1)
    assert [(w, o, r) for w, o, r, *_ in missing] == [
        ("setup", "passed", None), ("call", "failed", "guest 1 panicked"),
        ("teardown", "passed", None)]


def test_junit_names_without_a_session() -> None:
    assert junit_names("tests/unit/test_x.py::TestA::test_b[v4-a::b[1]]") == (
        "tests.unit.test_x.TestA", "test_b[v4-a::b[1]]")
    # pytest escapes an id's control characters ("\x07" as four characters); one that
    # reaches the name anyway is written visibly, as pytest's junitxml does
    assert junit_names(r"t.py::test_f[\x07]") == ("t", r"test_f[\x07]")
    assert junit_names("t.py::test_f[\x07]") == ("t", "test_f[#x07]")
    assert junit_key("t.py::test_f") == "t.test_f" and junit_key("weird.py") == "weird"
