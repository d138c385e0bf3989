"""The VM leg, live: a few real boots, and ipvlan created in a namespace.

Each boot costs ~10-40 s of CPU under TCG, so the real-VM tests are few and each checks
several things: output and exit status pass through, a panic and a hang fail with the
console tail and leave no QEMU behind, Ctrl-C stops every guest, and ``pytest --vm``
replays the guest's results. Kernel choice, the guest script, sharding and the JUnit merge
are in tests/unit.
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
from pyroute2.netlink.exceptions import NetlinkError

from linklab import vm
from linklab.netns import NetNS
from tests import LINKLAB

LINKLAB_VM = [*LINKLAB, "vm"]


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
         "tests/live/test_vm.py::test_ipvlan_modes_in_guest",
         "tests/unit/test_vm.py::test_covering_drops_nested_paths"],
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
         "tests/live/test_vm.py::test_ipvlan_modes_in_guest",
         "tests/unit/test_vm.py::test_covering_drops_nested_paths"],
        lambda: len(guests(qemu_only=True)) == 2, "both guests' QEMU", cwd=vm.REPO,
        env={k: v for k, v in os.environ.items() if k != "LINKLAB_RUN_ID"})
    assert rc == 2, out[-2000:] + err[-2000:]   # pytest: interrupted
    assert "KeyboardInterrupt" in out + err
    assert guests() == []
