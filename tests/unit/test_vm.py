"""The VM leg without booting: kernel choice (fake /boot), missing tools, the guest script,
the retry of a boot panic, the guests' argv, phases, sharding and output, and
cells run ahead (the real boots are in tests/live)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from linklab import vm
from linklab.cmd import MissingTool
from linklab.pytest.ahead import Ahead
from linklab.vmleg import phases as leg_clock
from linklab.vmleg.guests import _Prefixed, guest_argv
from linklab.vmleg.phases import PHASES, leg_phases, phase_summary, read_guest_phases
from linklab.vmleg.shard import shard
from tests import LINKLAB

LINKLAB_VM = [*LINKLAB, "vm"]


def fake_boot(tmp_path: Path, releases: dict[str, bool]) -> tuple[Path, Path]:
    """A /boot and /lib/modules holding ``releases`` (release -> has ipvlan.ko.xz)."""
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir(parents=True)
    for release, ipvlan in releases.items():
        (boot / f"vmlinuz-{release}").write_bytes(b"kernel")
        drv = modules / release / "kernel/drivers/net/ipvlan"
        drv.mkdir(parents=True)
        if ipvlan:
            (drv / "ipvlan.ko.xz").write_bytes(b"module")
    return boot, modules


def test_default_kernel_is_newest_with_ipvlan(tmp_path: Path) -> None:
    boot, modules = fake_boot(tmp_path, {"6.1.0-56-amd64": True, "6.12.117+deb12-amd64": True,
                                         "6.18.0-custom": False})
    assert vm.find_kernel(None, boot, modules).release == "6.12.117+deb12-amd64"
    assert [k.release for k in vm.list_kernels(boot, modules)] == [
        "6.18.0-custom", "6.12.117+deb12-amd64", "6.1.0-56-amd64"]


def test_kernel_by_release_prefix_or_path(tmp_path: Path) -> None:
    boot, modules = fake_boot(tmp_path, {"6.1.0-56-amd64": True, "6.12.117+deb12-amd64": True})
    assert vm.find_kernel("6.1", boot, modules).release == "6.1.0-56-amd64"
    assert vm.find_kernel("6.12", boot, modules).release == "6.12.117+deb12-amd64"
    image = boot / "vmlinuz-6.1.0-56-amd64"
    picked = vm.find_kernel(str(image), boot, modules)
    assert picked.image == image and picked.has_ipvlan
    with pytest.raises(vm.VMError, match=r"--kernel 5\.10: no such kernel .*installed: 6\.12"):
        vm.find_kernel("5.10", boot, modules)
    with pytest.raises(vm.VMError, match="no such kernel image"):
        vm.find_kernel(str(tmp_path / "nope" / "vmlinuz"), boot, modules)


def test_no_kernel_names_the_package(tmp_path: Path) -> None:
    boot, modules = fake_boot(tmp_path, {})
    with pytest.raises(vm.VMError, match="linux-image-amd64"):
        vm.find_kernel(None, boot, modules)
    boot2, modules2 = fake_boot(tmp_path / "b", {"6.18.0-custom": False})
    with pytest.raises(vm.VMError, match="no kernel .* has ipvlan.ko.*linux-image-amd64"):
        vm.find_kernel(None, boot2, modules2)


def test_missing_qemu_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool, **kw: None
                        if tool == "qemu-system-x86_64" else real(tool, **kw))
    with pytest.raises(MissingTool, match="qemu-system-x86_64 .*Debian package qemu-system-x86"):
        vm.check_tools()


def test_a_dynamically_linked_busybox_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """virtme-ng's initramfs needs a static busybox: a dynamic one (python stands in for it)
    is refused, naming the Debian package."""
    found = {"qemu-system-x86_64": "/bin/true", "busybox": sys.executable}
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool, **kw: found.get(tool) or real(tool, **kw))
    with pytest.raises(MissingTool, match="dynamically linked; .*Debian package busybox-static"):
        vm.check_tools()


def test_guest_script_markers_and_status(tmp_path: Path) -> None:
    """The guest script, run by the host's sh, brackets the command and keeps its status."""
    script = tmp_path / "guest.sh"
    script.write_text(vm.guest_script(["sh", "-c", "echo \"$LINKLAB_X\"; exit 7"],
                                      str(tmp_path), {"LINKLAB_X": "a 'quoted' value"}))
    done = subprocess.run(["sh", str(script)], check=False, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 7
    assert done.stdout == "a 'quoted' value\n"
    assert done.stderr.splitlines() == [vm.START, f"{vm.END}7"]


def test_covering_drops_nested_paths() -> None:
    assert vm.covering([Path("/a/b"), Path("/a"), Path("/c/d")]) == [Path("/a"), Path("/c/d")]


def test_unknown_kernel_cli_error() -> None:
    done = subprocess.run([*LINKLAB_VM, "--kernel", "9.99", "--", "true"], check=False,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == vm.EXIT_SETUP
    assert "--kernel 9.99: no such kernel in /boot" in done.stderr


def test_guest_argv_workers_and_groups(tmp_path: Path) -> None:
    """Two or more workers: xdist with loadgroup (a scenario stays on one worker); one
    worker: a plain pytest; -x and verbosity pass through; the node ids come last."""
    junit = tmp_path / "j.xml"
    two = guest_argv(["t.py::a", "t.py::b"], junit, ["--results-dir=/r"], 2, verbose=1,
                     exitfirst=True)
    assert two[:3] == [sys.executable, "-m", "pytest"]
    assert two[two.index("-n") + 1] == "2" and two[two.index("--dist") + 1] == "loadgroup"
    assert f"--junitxml={junit}" in two and "--results-dir=/r" in two and "-x" in two
    assert "-v" in two and two[-2:] == ["t.py::a", "t.py::b"]
    one = guest_argv(["t.py::a"], junit, [], 1, verbose=-1)
    assert "-n" not in one and "--dist" not in one and "-q" in one and "-x" not in one


def test_leg_phases_add_up_and_summary(tmp_path: Path) -> None:
    """The guest's phases and the host's make up the leg's total; 'guest end' is what the
    VM run took beyond boot and the guest's phases; a guest that wrote none shows n/a."""
    path = tmp_path / "vm-leg.json"
    path.write_text('{"import_s": 3.0, "collect_s": 5.0, "cells_s": 100.0}')
    outcome = vm.Outcome(0, "6.12.0", "tcg", 10.0, 120.0)
    leg = leg_phases(outcome, read_guest_phases(path), 2.0, 0.5)
    assert leg["end_s"] == pytest.approx(2.0)
    assert sum(leg[k] for k, _ in PHASES if leg[k] is not None) == \
        pytest.approx(leg["total_s"]) == 122.5
    line = phase_summary(leg)
    assert line.startswith("vm leg: boot 10.0s, import 3.0s, collection 5.0s, cells 100.0s")
    assert line.endswith("replay 0.5s, total 122.5s")
    panic = leg_phases(vm.Outcome(125, "6.12.0", "tcg", None, 30.0, "panic"),
                       read_guest_phases(tmp_path / "missing.json"), 2.0, 0.1)
    assert panic["boot_s"] is None and panic["cells_s"] is None and panic["end_s"] is None
    assert phase_summary(panic) == "vm leg: replay 0.1s, total 32.1s"


def test_guest_phases_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest's main process writes import, collection and cells durations in order: the
    process's age when the plugins were loaded, then the time between the marks; a phase that
    never ended is not written."""
    assert 0 < leg_clock.process_age_s() < 3600
    clock = iter([100.0, 102.5, 110.0, 200.0])       # configured, collected, cells done; next
    monkeypatch.setattr(leg_clock, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    monkeypatch.setattr(leg_clock, "process_age_s", lambda: 3.0)
    phases = leg_clock.GuestPhases(str(tmp_path / "p.json"))
    phases.collection_done()
    phases.cells_end()
    phases.write()
    got = json.loads((tmp_path / "p.json").read_text())
    assert got == {"import_s": 3.0, "collect_s": 2.5, "cells_s": 7.5}
    cut_short = leg_clock.GuestPhases(str(tmp_path / "q.json"))     # configured at 200.0
    cut_short.write()
    assert json.loads((tmp_path / "q.json").read_text()) == {"import_s": 3.0}


def test_a_panic_while_booting_is_retried_once_and_a_panic_of_the_command_never() -> None:
    """A guest that panics before its command starts (boot_s None) is booted once more; one
    that panics while the command runs is that command's outcome."""
    boot_panic = vm.Outcome(125, "6.12", "tcg", None, 2.0, "panic", ["Oops: int3"])
    ran = vm.Outcome(0, "6.12", "tcg", 9.0, 20.0)
    cmd_panic = vm.Outcome(125, "6.12", "tcg", 9.0, 12.0, "panic", ["sysrq: Trigger a crash"])
    for script, want, boots in (([boot_panic, ran], ran, 2),
                                ([boot_panic, boot_panic], boot_panic, 2),
                                ([cmd_panic, ran], cmd_panic, 1)):
        queue = list(script)
        err = io.BytesIO()
        assert vm.run(["true"], err=err,
                      once=lambda argv, queue=queue, **kw: queue.pop(0)) is want
        assert len(script) - len(queue) == boots
        assert (b"booting it once more" in err.getvalue()) == (boots == 2)


class _Item:
    """Just what the leg's split reads of a pytest item."""

    def __init__(self, nodeid: str, group: str | None = None) -> None:
        self.nodeid = nodeid
        self.group = group

    def get_closest_marker(self, name: str):
        if name == "xdist_group" and self.group:   # (a mark's args; xdist may not be loaded)
            return SimpleNamespace(args=(self.group,), kwargs={})
        return None


def test_shard_keeps_a_scenario_whole_balances_weight_and_keeps_order() -> None:
    items = [_Item(f"t.py::test_cell[a-{i}]", "a") for i in range(6)] + \
        [_Item(f"t.py::test_cell[b-{i}]", "b") for i in range(3)] + \
        [_Item(f"d.py::test_dhcp[{i}]") for i in range(4)]
    weights = {i.nodeid: (3.0 if i.nodeid.startswith("d.py") else 1.0) for i in items}
    parts = shard(items, 2, weights)
    assert len(parts) == 2 and sorted(i.nodeid for p in parts for i in p) == \
        sorted(i.nodeid for i in items)
    for group in ("a", "b"):
        assert sum(any(i.group == group for i in p) for p in parts) == 1, group
    loads = [sum(weights[i.nodeid] for i in p) for p in parts]
    assert max(loads) - min(loads) <= 3.0, loads       # 21 units as 12 + 9 at worst
    order = [i.nodeid for i in items]
    for p in parts:
        assert [i.nodeid for i in p] == sorted((i.nodeid for i in p), key=order.index)
    assert shard(items[:2], 4, weights) == [items[:2]]  # one group: one guest, not four


def test_prefixed_output_keeps_lines_whole_per_guest() -> None:
    sink, lock = io.BytesIO(), threading.Lock()
    a, b = _Prefixed(sink, b"[g0] ", lock), _Prefixed(sink, b"[g1] ", lock)
    a.write(b"tests/x.py ..")
    b.write(b"collected 3\n")
    a.write(b". [100%]\npartial")
    a.close()
    assert sink.getvalue().splitlines() == [b"[g1] collected 3", b"[g0] tests/x.py ... [100%]",
                                            b"[g0] partial"]


def test_cells_ahead_run_at_most_n_at_once_in_order_and_hand_back_errors() -> None:
    """``--cells-ahead``: submitted cells run N at a time, in order; a test gets its own
    cell's result or exception; close cancels what has not started."""
    lock, running, peak, started = threading.Lock(), [0], [0], []
    gate = threading.Event()

    def cell(n: int):
        def fn():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                started.append(n)
            gate.wait(5)
            with lock:
                running[0] -= 1
            if n == 2:
                raise ValueError("cell 2 broke")
            return n * 10
        return fn

    ahead = Ahead(2)
    for n in range(6):
        ahead.submit(f"c{n}", cell(n))
    time.sleep(0.2)
    assert sorted(started) == [0, 1] and peak[0] == 2       # two in flight, the first two
    gate.set()
    assert ahead.result("c0", cell(0)) == 0 and ahead.result("c1", cell(1)) == 10
    with pytest.raises(ValueError, match="cell 2 broke"):
        ahead.result("c2", cell(2))
    assert ahead.result("never-submitted", lambda: "ran now") == "ran now"
    ahead.close()
    assert peak[0] == 2 and ahead.futures == {}
    assert Ahead(1).pool is None                         # 1: nothing runs ahead


