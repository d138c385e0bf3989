"""The scenario CLI, live: up / exec / ls / down (pinned record, nothing left) and record
(its output pasted makes the matrix pass). ``check`` and bad input are in tests/unit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from linklab.cmd import NETNS_DIR, proc_starttime
from linklab.model import SHIPPED, load_scenario
from linklab.ownership import RECORD_DIR
from tests import LINKLAB


def test_up_exec_down_leaves_nothing(linklab_cli, process_state) -> None:
    name = f"t{os.getpid()}"
    # held by this test's process: a drill's kill -9 of the session leaves nothing pinned
    up = linklab_cli("up", str(SHIPPED / "veth.toml"), "--name", name,
                     "--held-by", str(os.getpid()))
    assert up.returncode == 0, up.stderr
    try:
        record = next(w for w in up.stdout.split() if w.startswith(RECORD_DIR))
        marker = Path(record).stem
        namespaces = [f"ll{marker}-{n}" for n in ("upstream", "remote", "host", "c1", "c2")]
        assert all(os.path.exists(f"{NETNS_DIR}/{n}") for n in namespaces)
        assert "c1" in up.stdout and "198.18.10.2/24" in up.stdout
        shown = linklab_cli("exec", name, "c1", "--", "ip", "-br", "addr")
        assert shown.returncode == 0 and "198.18.10.2/24" in shown.stdout, shown.stdout
        assert linklab_cli("exec", name, "c1", "--", "sh", "-c", "exit 7").returncode == 7
        nosuch = linklab_cli("exec", name, "c9", "--", "true")
        assert nosuch.returncode == 1 and "no node 'c9'" in nosuch.stderr
        # a concurrent clean (and a test session's) leaves a pinned topology alone
        assert linklab_cli("clean").returncode == 0
        assert all(os.path.exists(f"{NETNS_DIR}/{n}") for n in namespaces)
        assert name in linklab_cli("ls").stdout
        # a process left running inside the topology is stopped by down
        sleeper = subprocess.Popen([*LINKLAB, "exec", name, "c2", "--", "sleep", "600"])
        deadline = time.monotonic() + 10
        inside = None
        while inside is None and time.monotonic() < deadline:
            inside = next((int(p) for p in os.listdir("/proc") if p.isdigit()
                           and _cmdline(int(p)) == ["sleep", "600"]
                           and _netns(int(p)) == os.stat(f"{NETNS_DIR}/{namespaces[-1]}")
                           .st_ino), None)
            time.sleep(0.05)
        assert inside is not None
    finally:
        down = linklab_cli("down", name)
    assert down.returncode == 0, down.stderr
    assert proc_starttime(inside) is None or process_state(inside) == "Z"
    sleeper.wait(timeout=10)
    assert not [n for n in namespaces if os.path.exists(f"{NETNS_DIR}/{n}")]
    assert not os.path.exists(record)
    assert name not in linklab_cli("ls").stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert f"ll{marker}" not in links.stdout


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def _netns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def test_record_output_pasted_makes_the_matrix_pass(tmp_path: Path, linklab_cli,
                                                     without_expect) -> None:
    path = without_expect("fresh")
    done = linklab_cli("record", str(path))
    assert done.returncode == 0, done.stderr
    kernel = os.uname().release
    assert done.stdout.startswith("[expect]\n")
    assert f'why = "observed on {kernel}: <fill in the reason>"' in done.stdout
    path.write_text(path.read_text() + "\n" + done.stdout)
    sc = load_scenario(path)                      # a complete [expect] table now
    assert sc.expect["child-to-child"].results == {"v4": "pass", "v6": "pass"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                          "-m", "connectivity", f"--scenarios={path}"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "21 passed" in run.stdout, run.stdout[-500:]
