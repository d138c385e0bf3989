"""The VM leg: kernel choice (fake /boot), the guest script, and a few real boots.

Each boot costs ~10-40 s of CPU under TCG, so the real-VM tests are few and each checks
several things: output and exit status pass through, a panic and a hang fail with the
console tail and leave no QEMU behind, and ``pytest --vm`` replays the guest's results.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from linklab import vm
from linklab.cmd import MissingTool

LINKLAB_VM = [sys.executable, "-m", "linklab.cli", "vm"]


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
    import shutil

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda tool, **kw: None
                        if tool == "qemu-system-x86_64" else real(tool, **kw))
    with pytest.raises(MissingTool, match="qemu-system-x86_64 .*Debian package qemu-system-x86"):
        vm.check_tools()


def test_static_busybox_check() -> None:
    assert not vm._is_static(os.path.realpath(sys.executable))  # python is dynamically linked


def test_guest_script_markers_and_status(tmp_path: Path) -> None:
    """The guest script, run by the host's sh, brackets the command and keeps its status."""
    script = tmp_path / "guest.sh"
    script.write_text(vm.guest_script(["sh", "-c", "echo \"$LINKLAB_X\"; exit 7"],
                                      str(tmp_path), {"LINKLAB_X": "a 'quoted' value"}))
    done = subprocess.run(["sh", str(script)], check=False, capture_output=True, text=True, timeout=30)
    assert done.returncode == 7
    assert done.stdout == "a 'quoted' value\n"
    assert done.stderr.splitlines() == [vm.START, f"{vm.END}7"]


def test_covering_drops_nested_paths() -> None:
    assert vm.covering([Path("/a/b"), Path("/a"), Path("/c/d")]) == [Path("/a"), Path("/c/d")]


def test_unknown_kernel_cli_error() -> None:
    done = subprocess.run([*LINKLAB_VM, "--kernel", "9.99", "--", "true"], check=False, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == vm.EXIT_SETUP
    assert "--kernel 9.99: no such kernel in /boot" in done.stderr


def test_guest_argv_workers_and_groups(tmp_path: Path) -> None:
    """Two or more workers: xdist with loadgroup (a scenario stays on one worker); one
    worker: a plain pytest; -x and verbosity pass through; the node ids come last."""
    from linklab.pytest.vm import guest_argv

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
    from linklab.pytest.vm import PHASES, leg_phases, phase_summary, read_guest_phases

    path = tmp_path / "vm-leg.json"
    path.write_text('{"import_s": 3.0, "collect_s": 5.0, "cells_s": 100.0}')
    outcome = vm.Outcome(0, "6.12.0", "tcg", 10.0, 120.0)
    leg = leg_phases(outcome, read_guest_phases(path), 2.0, 0.5)
    assert leg["end_s"] == pytest.approx(2.0)
    assert sum(leg[k] for k, _ in PHASES) == pytest.approx(leg["total_s"]) == 122.5
    line = phase_summary(leg)
    assert line.startswith("vm leg: boot 10.0s, import 3.0s, collection 5.0s, cells 100.0s")
    assert line.endswith("replay 0.5s, total 122.5s")
    panic = leg_phases(vm.Outcome(125, "6.12.0", "tcg", None, 30.0, "panic"),
                       read_guest_phases(tmp_path / "missing.json"), 2.0, 0.1)
    assert panic["boot_s"] is None and panic["cells_s"] is None and panic["end_s"] is None
    assert phase_summary(panic) == "vm leg: replay 0.1s, total 32.1s"


def test_guest_phases_file(tmp_path: Path) -> None:
    """The guest's main process writes import, collection and cells durations in order."""
    from linklab.pytest.vm import GuestPhases, process_age_s

    assert 0 < process_age_s() < 3600
    phases = GuestPhases(str(tmp_path / "p.json"))
    phases.collection_done()
    phases.cells_end()
    phases.write()
    got = json.loads((tmp_path / "p.json").read_text())
    assert set(got) == {"import_s", "collect_s", "cells_s"}
    assert got["import_s"] > 0 and got["collect_s"] >= 0 and got["cells_s"] >= 0


# -- real boots ----------------------------------------------------------------------------

needs_vm = pytest.mark.skipif(not vm.list_kernels() or not Path("/usr/bin/qemu-system-x86_64")
                              .exists(), reason="no /boot/vmlinuz-* or qemu-system-x86_64 "
                              "(Debian packages linux-image-amd64, qemu-system-x86)")


def vm_processes(name: str) -> list[int]:
    """PIDs of vng / virtme-run / QEMU processes still running for guest ``name``."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if name.encode() in argv:
            left.append(int(pid))
    return left


qemu_left = vm_processes


@needs_vm
def test_vm_output_status_and_results_share() -> None:
    """One boot: stdout, exit status, LINKLAB_VIRT, writable results/, the figures line."""
    token = secrets.token_hex(4)
    probe = vm.REPO / "results" / f".vm-test-{token}"
    try:
        done = subprocess.run(
            [*LINKLAB_VM, "--", "sh", "-c",
             f'uname -r; echo "virt=$LINKLAB_VIRT"; echo guest > {probe}; false'],
            check=False, capture_output=True, text=True, timeout=600)
        lines = done.stdout.splitlines()
        kernel = vm.find_kernel()
        assert done.returncode == 1, done.stderr
        assert lines[0] == kernel.release != os.uname().release
        assert lines[1] in ("virt=tcg", "virt=kvm")
        assert probe.read_text() == "guest\n"
        assert "vm leg: boot " in done.stderr and f"(kernel {kernel.release}, " in done.stderr
    finally:
        probe.unlink(missing_ok=True)


@needs_vm
def test_vm_panic_fails_fast_with_console_tail() -> None:
    name = f"linklab-test-{secrets.token_hex(3)}"
    done = subprocess.run([*LINKLAB_VM, "--name", name, "--timeout", "600", "--", "sh", "-c",
                           "echo c > /proc/sysrq-trigger; sleep 600"],
                          check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == vm.EXIT_GUEST, done.stderr
    assert "linklab vm: guest panic" in done.stderr
    assert "Kernel panic - not syncing" in done.stderr
    assert "did not finish" not in done.stderr
    assert qemu_left(name) == []


@needs_vm
def test_vm_hang_stops_at_timeout() -> None:
    name = f"linklab-test-{secrets.token_hex(3)}"
    done = subprocess.run([*LINKLAB_VM, "--name", name, "--timeout", "90", "--", "sleep", "900"],
                          check=False, capture_output=True, text=True, timeout=400)
    assert done.returncode == vm.EXIT_TIMEOUT, done.stderr
    assert "did not finish within 90s; stopping QEMU" in done.stderr
    assert "last console lines:" in done.stderr
    assert qemu_left(name) == []


# SIGINT back to its default first: a CI shell may start us with it ignored
SIGINT_DEFAULT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                  "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


def ctrl_c_when(argv: list[str], ready, what: str, **kw) -> tuple[int, str, str]:
    """Start ``python argv`` with SIGINT at its default, wait (120 s at most) until
    ``ready()``, send it SIGINT, return its exit status, stdout and stderr."""
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_DEFAULT, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)
    try:
        deadline = time.monotonic() + 120
        while not ready():
            assert time.monotonic() < deadline, f"{what} did not start within 120 s"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


@needs_vm
def test_vm_ctrl_c_stops_qemu() -> None:
    """SIGINT (Ctrl-C) while the guest boots: QEMU and vng are stopped, nothing is left."""
    name = f"linklab-test-{secrets.token_hex(3)}"
    rc, _, err = ctrl_c_when(
        [*LINKLAB_VM[1:], "--name", name, "--", "sleep", "600"],
        lambda: any(b"qemu-system-x86_64" in Path(f"/proc/{p}/cmdline").read_bytes()
                    for p in vm_processes(name) if Path(f"/proc/{p}").exists()), "QEMU")
    assert rc == 130, err
    assert "interrupted; QEMU stopped" in err
    assert vm_processes(name) == []


def test_ipvlan_modes_in_guest(run) -> None:
    """Smoke test for the VM leg: every ipvlan mode can be created (skips on a host kernel
    without ipvlan; ``pytest --vm`` runs it on the distro kernel)."""
    from pyroute2.netlink.exceptions import NetlinkError

    from linklab.netns import NetNS

    name = run.ns_name("vmtest")
    run.own_namespace(name)
    ns = NetNS(name)
    try:
        ns.ipr.link("add", ifname="llp0", kind="veth", peer={"ifname": "llp1"})
        parent = ns.ipr.link_lookup(ifname="llp0")[0]
        for i, mode in enumerate(("l2", "l3", "l3s")):
            try:
                ns.ipr.link("add", ifname=f"llv{i}", kind="ipvlan", link=parent,
                            ipvlan_mode={"l2": 0, "l3": 1, "l3s": 2}[mode])
            except NetlinkError as exc:
                pytest.skip(f"kernel lacks ipvlan (CONFIG_IPVLAN): {exc}")
            link = ns.ipr.get_links(ns.ipr.link_lookup(ifname=f"llv{i}")[0])[0]
            info = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            assert info.get_attr("IFLA_IPVLAN_MODE") == i
    finally:
        ns.close()
        run.disown_namespace(name)


@needs_vm
def test_pytest_vm_option_replays_guest_results(tmp_path: Path) -> None:
    """``pytest --vm`` splits the selection across two guests booted side by side, merges
    their JUnit files and reports every test here, labelled, with the leg's phases (per guest
    too) in vm-leg-<release>.json; no shard file stays behind."""
    host_junit = tmp_path / "host.xml"
    run_id = f"vmtest-{secrets.token_hex(3)}"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--vm", "--vm-guests=2", "-v", "-p", "no:cacheprovider",
         f"--results-dir={tmp_path}", f"--run-id={run_id}", f"--junitxml={host_junit}",
         "tests/test_vm.py::test_ipvlan_modes_in_guest",
         "tests/test_vm.py::test_covering_drops_nested_paths"],
        cwd=vm.REPO, check=False, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k != "LINKLAB_RUN_ID"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "test_ipvlan_modes_in_guest PASSED" in done.stdout
    kernel = vm.find_kernel().release
    guest_junit = tmp_path / run_id / f"junit-vm-{kernel}.xml"
    guest_cases = list(ET.parse(guest_junit).getroot().iter("testcase"))
    assert len(guest_cases) == 2 and all(c.find("skipped") is None and c.find("failure") is None
                                         for c in guest_cases)
    assert "test_covering_drops_nested_paths PASSED" in done.stdout
    props = {p.get("name"): p.get("value")
             for p in ET.parse(host_junit).getroot().iter("property")}
    assert props["kernel"] == kernel and props["virt"] in ("tcg", "kvm")
    assert "vm leg: boot " in done.stdout and "2 guest(s) (1 + 1)" in done.stdout
    assert "[g0] " in done.stdout and "[g1] " in done.stdout   # each guest's lines, labelled
    leg = json.loads((tmp_path / run_id / f"vm-leg-{kernel}.json").read_text())
    assert leg["guests"] == 2 and leg["cells"] == 2 and leg["failure"] is None
    assert [g["cells"] for g in leg["per_guest"]] == [1, 1]
    for one in (leg, *leg["per_guest"]):
        assert all(one[k] > 0 for k in ("boot_s", "import_s", "collect_s", "cells_s",
                                        "total_s"))
    assert not list((tmp_path / run_id).glob("vm-shard-*"))


def test_a_panic_while_booting_is_retried_once_and_a_panic_of_the_command_never(
        monkeypatch) -> None:
    """A guest that panics before its command starts (boot_s None) is booted once more; one
    that panics while the command runs is that command's outcome."""
    import io

    boot_panic = vm.Outcome(125, "6.12", "tcg", None, 2.0, "panic", ["Oops: int3"])
    ran = vm.Outcome(0, "6.12", "tcg", 9.0, 20.0)
    cmd_panic = vm.Outcome(125, "6.12", "tcg", 9.0, 12.0, "panic", ["sysrq: Trigger a crash"])
    for script, want, boots in (([boot_panic, ran], ran, 2),
                                ([boot_panic, boot_panic], boot_panic, 2),
                                ([cmd_panic, ran], cmd_panic, 1)):
        queue = list(script)
        monkeypatch.setattr(vm, "_run_once", lambda argv, **kw: queue.pop(0))
        err = io.BytesIO()
        assert vm.run(["true"], err=err) is want
        assert len(script) - len(queue) == boots
        assert (b"booting it once more" in err.getvalue()) == (boots == 2)


class _Item:
    """Just what the leg's split reads of a pytest item."""

    def __init__(self, nodeid: str, group: str | None = None) -> None:
        self.nodeid = nodeid
        self.group = group

    def get_closest_marker(self, name: str):
        if name == "xdist_group" and self.group:
            return pytest.mark.xdist_group(self.group).mark
        return None


def test_shard_keeps_a_scenario_whole_balances_weight_and_keeps_order() -> None:
    from linklab.pytest.vm import shard

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


def test_merge_junit_keeps_every_guests_cases_and_removes_the_parts(tmp_path: Path) -> None:
    from linklab.pytest.vm import merge_junit, read_junit

    for n in range(2):
        (tmp_path / f"vm-shard-k-{n}.xml").write_text(
            f'<testsuites><testsuite name="pytest" tests="1"><testcase classname="t" '
            f'name="c{n}" time="1.5"/></testsuite></testsuites>')
    into = tmp_path / "junit-vm-k.xml"
    merge_junit([tmp_path / "vm-shard-k-0.xml", tmp_path / "vm-shard-k-1.xml"], into)
    assert sorted(read_junit(into)) == ["t.c0", "t.c1"]
    assert [p.name for p in tmp_path.iterdir()] == [into.name]


def test_prefixed_output_keeps_lines_whole_per_guest() -> None:
    import io
    import threading

    from linklab.pytest.vm import _Prefixed

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
    import threading

    from linklab.pytest.ahead import Ahead

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


@needs_vm
def test_ctrl_c_of_pytest_vm_stops_every_guest(tmp_path: Path) -> None:
    """A Ctrl-C while two guests run: pytest reports the interruption and no vng or QEMU of
    either guest is left (both share the results directory ``tmp_path`` in their argv)."""
    def guests(qemu_only: bool = False) -> list[int]:
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(tmp_path).encode() in argv and int(pid) != os.getpid() and \
                    (not qemu_only or b"qemu-system" in argv.split(b"\0")[0]):
                out.append(int(pid))
        return out

    rc, out, err = ctrl_c_when(
        ["-m", "pytest", "--vm", "--vm-guests=2", "-q", "-p", "no:cacheprovider",
         f"--results-dir={tmp_path}", "--run-id=ctrlc",
         "tests/test_vm.py::test_ipvlan_modes_in_guest",
         "tests/test_vm.py::test_covering_drops_nested_paths"],
        lambda: len(guests(qemu_only=True)) == 2, "both guests' QEMU", cwd=vm.REPO,
        env={k: v for k, v in os.environ.items() if k != "LINKLAB_RUN_ID"})
    assert rc == 2, out[-2000:] + err[-2000:]   # pytest: interrupted
    assert "KeyboardInterrupt" in out + err
    assert guests() == []
