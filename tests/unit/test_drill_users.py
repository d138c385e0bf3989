"""The drill's two-users section without running anyone (src/linklab/drill/users.py): the run
ids it asks make for, what counts as mixed, the run id read back from make's output."""

from __future__ import annotations

from pathlib import Path

from linklab.drill.users import User, _made_run_id, _owns, count_mixed, run_ids

ROOT = Path(__file__).resolve().parents[2]


def test_run_ids_from_make_differ() -> None:
    """The drill asks make itself for both users' ids, both makes started at once."""
    report_id, test_id = run_ids(ROOT, ROOT)
    assert "-report-" in report_id and "-make-" in test_id
    assert report_id.split("-")[-1] != test_id.split("-")[-1]


def _user(tmp: Path, name: str, scenarios: set[str], markers: set[str], vms: set[str],
          commit: str) -> User:
    return User(name, tmp, f"id-{name}", frozenset(scenarios), commit, markers=set(markers),
                vm_names=set(vms))


def test_count_mixed_finds_the_other_users_rows(tmp_path: Path) -> None:
    """A row, a JUnit case, a leg of another checkout's code, a record or a guest name of one
    user in the other's run each count."""
    a = _user(tmp_path / "a", "report", {"veth"}, {"1a2b"}, {"linklab-1a2b-g0"}, "")
    b = _user(tmp_path / "b", "test", {"macvlan-bridge"}, {"3c4d"}, {"linklab-3c4d-g0"}, "c2")
    for u, rows, commit in ((a, ["veth", "macvlan-bridge"], "c1"), (b, ["macvlan-bridge"], "c2")):
        u.rundir.mkdir(parents=True)
        (u.rundir / "connectivity.host-main.jsonl").write_text(
            "".join(f'{{"scenario": "{s}"}}\n' for s in rows))
        (u.rundir / "junit-host.xml").write_text(
            '<testsuites><testsuite><testcase classname="t" name="test_cell[veth-v4-x]"/>'
            "</testsuite></testsuites>")
        (u.rundir / "meta.json").write_text(f'{{"legs": {{"6.1-none": {{"git_commit": '
                                            f'"{commit}"}}}}}}')
    assert count_mixed([a, b]) == (2, ["report: 1 row(s) of test's scenarios",
                                       "test: 1 JUnit case(s) of report's"])
    (b.rundir / "meta.json").write_text('{"legs": {"6.12-tcg": {"git_commit": "c1"}}}')
    (a.rundir / "meta.json").write_text('{"legs": {"6.12-tcg": {"git_commit": "c2"}}}')
    b.vm_names.add("linklab-1a2b-g1")     # a guest named after the other user's record
    b.markers.add("1a2b")                 # a record both users' trees owned
    n, why = count_mixed([a, b])
    # the shared record also puts report's own guest under a marker test owned: 7
    assert n == 7 and "record 1a2b owned by report and test" in why
    assert {"test: leg 6.12-tcg ran another checkout's code",
            "report: leg 6.12-tcg ran another checkout's code"} <= set(why)


def test_made_run_id_is_read_from_makes_output(tmp_path: Path) -> None:
    log = tmp_path / "report.log"
    log.write_text("make report: 1201 s; open reports/20261206T141614Z-report-17194/index.html")
    assert _made_run_id(log) == "20261206T141614Z-report-17194"


def test_one_results_directory_for_both_counts(tmp_path: Path) -> None:
    """Two users given one run id (the second-resolution make id did that) share a directory."""
    a = User("report", tmp_path, "20261206T141951Z-make", frozenset(), "")
    b = User("test", tmp_path, "20261206T141951Z-make", frozenset(), "")
    assert count_mixed([a, b]) == (1, [f"one results directory {a.rundir}"])


def test_a_cell_is_its_scenarios_and_the_cost_datapath_is_not_veth() -> None:
    assert _owns(frozenset({"veth"}), "veth-v4-child-to-host")
    assert _owns(frozenset({"veth"}), "veth")           # an anatomy row, test_anatomy[veth]
    assert not _owns(frozenset({"veth"}), "veth-pair")  # the cost bench's datapath
    assert not _owns(frozenset({"veth"}), "twohost-veth-v4-child-to-host")


def test_a_guest_of_the_other_user_in_a_junit_file_counts(tmp_path: Path) -> None:
    """The JUnit suites carry the guest's hostname (its QEMU -name, linklab-<marker>-gN)."""
    a = User("report", tmp_path / "a", "r", frozenset(), "", markers={"1a2b"})
    b = User("test", tmp_path / "b", "t", frozenset(), "", markers={"3c4d"})
    b.rundir.mkdir(parents=True)
    (b.rundir / "junit-vm-6.12.xml").write_text(
        '<testsuites><testsuite name="pytest" hostname="linklab-1a2b-g0"/></testsuites>')
    assert count_mixed([a, b]) == (1, ["test: guest linklab-1a2b-g0 of report's"])
