"""The nightly's own failures, live on the two VMs (``--nightly``; issue #24).

Each fault is one real night, ``ci/nightly --local`` with one ipvlan cell per node (its own
``NIGHTLY_DIR`` and ownership record directory under the drill's work dir, so real nights'
baselines are untouched), broken from outside at its step as a real failure would happen:

- **no address**: once node-b's domain exists, a bridge-family nftables rule in the night's
  namespace drops its DHCP requests on the management network (the night's boot timeout set
  to :data:`BOOT_TIMEOUT_S`);
- **ssh cut**: mid-suite on node-a, ``virsh domif-setlink`` takes node-a's management link
  down (ssh's ServerAlive bounds it);
- **peer agent killed**: mid two-host step, the agent's PID on node-b (found over ssh with
  the night's ssh config) gets SIGKILL;
- **libvirtd killed**: mid-suite, the night's own libvirtd (PID from its ownership record)
  gets SIGKILL.

Each must exit 3 (broken), name its cause in the last line and in nightly.json, run destroy
and libvirt's release, and leave nothing: no domain, network, volume or pool file, no libvirt
daemon, dnsmasq, QEMU or vagrant process, no namespace, no ownership record.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from linklab.cmd import cmd
from linklab.drill import NETNS, PY, ROOT
from linklab.drill.runner import Drill
from linklab.poll import poll

NIGHTLY = ROOT / "ci" / "nightly"
# one cell per node: the night's whole path (box, libvirt, up, ssh, pytest, collect, report,
# destroy) in the least guest time under TCG
SELECT = "ipvlan-l2-bridge-v4-child-to-child"
BOOT_TIMEOUT_S = 420          # the no-address night's LINKLAB_BOOT_TIMEOUT_S
NIGHT_BOUND_S = 3600.0        # a night still running this long after it got libvirt: hung
LIBVIRT_WAIT_S = 3600         # another night (another user's) may hold the machine's libvirt
LIBVIRT_FILES = ("/etc/libvirt/qemu/{p}*", "/etc/libvirt/qemu/networks/{p}*",
                 "/etc/libvirt/qemu/networks/autostart/{p}*", "/run/libvirt/qemu/{p}*",
                 "/run/libvirt/network/{p}*", "/run/libvirt/storage/{p}*",
                 "/var/lib/libvirt/dnsmasq/{p}*", "/var/lib/libvirt/qemu/domain-*-{p}*",
                 "/var/lib/libvirt/qemu/channel/target/domain-*-{p}*",
                 "/var/log/libvirt/qemu/{p}*")
STEP = r"^==> \[\d+/\d+\] "


class Night:
    """One ``ci/nightly --local`` under the drill: its dirs, its output read line by line."""

    def __init__(self, base: Path, two_host: bool, boot_timeout_s: int | None) -> None:
        self.base = base
        self.nightly_dir, self.records = base / "nightly", base / "records"
        self.records.mkdir(parents=True)
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        env = {**os.environ, "NIGHTLY_LOCAL": "1", "NIGHTLY_DIR": str(self.nightly_dir),
               "NIGHTLY_SELECT": SELECT, "NIGHTLY_TWO_HOST": "1" if two_host else "0",
               "NIGHTLY_STAMP": self.stamp, "NIGHTLY_LIBVIRT_WAIT_S": str(LIBVIRT_WAIT_S),
               "LINKLAB_RECORD_DIR": str(self.records), "PYTHONUNBUFFERED": "1"}
        if boot_timeout_s:
            env["LINKLAB_BOOT_TIMEOUT_S"] = str(boot_timeout_s)
        self.lines: list[tuple[float, str]] = []
        self.log = open(base / "night.log", "w")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([PY, str(NIGHTLY), "--local"], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, text=True, errors="replace",
                                     start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.marker = ""

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
            self.log.write(line)
            self.log.flush()

    @property
    def night(self) -> Path:
        return self.nightly_dir / "nights" / self.stamp

    @property
    def prefix(self) -> str:
        return f"ll{self.marker}-"

    def running(self) -> bool:
        """The night runs; once it ended, its last output is read (bounded) first."""
        if self.proc.poll() is None:
            return True
        self.reader.join(5)
        return False

    def wait_line(self, pattern: str, timeout_s: float) -> tuple[float, str] | None:
        """The first output line matching ``pattern`` (None: the night ended or time ran out);
        also learns the night's libvirt marker on the way."""
        rx = re.compile(pattern)
        seen = 0

        def matched() -> tuple[float, str] | None:
            nonlocal seen
            for t, line in self.lines[seen:]:
                seen += 1
                m = re.match(r"<== libvirt: namespace ll(\w+)-virt", line)
                if m:
                    self.marker = m[1]
                if rx.search(line):
                    return t, line
            return None
        return poll(matched, timeout_s, 0.2, alive=self.running)

    def virsh(self, *args: str) -> str:
        return cmd(["virsh", "-c", "qemu:///system", "-q", *args], timeout=60,
                   check=False).stdout

    def mgmt_nic(self, node: str, timeout_s: float = 900) -> tuple[str, str]:
        """(tap, MAC) of a node's NIC on the management network, once its domain exists."""
        def listed() -> tuple[str, str] | None:
            for f in (line.split() for line in
                      self.virsh("domiflist", f"{self.prefix}{node}").splitlines()):
                if len(f) >= 5 and f[2] == f"{self.prefix}mgmt":
                    return f[0], f[4]
            return None
        nic = poll(listed, timeout_s, 0.5, alive=lambda: self.proc.poll() is None)
        if nic is None:
            raise TimeoutError(f"{node}'s management NIC did not appear")
        return nic

    def ssh(self, node: str, remote: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
        """A command on a node over the night's own ssh config, inside its namespace."""
        return subprocess.run(
            ["nsenter", f"--net={NETNS}/{self.prefix}virt", "--", "ssh", "-F",
             str(self.night / "work" / "ssh-config"), "-o", "BatchMode=yes", "-o",
             "ConnectTimeout=20", node, "--", remote], capture_output=True, text=True,
            timeout=timeout_s, check=False)

    def wait_exit(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """A night the drill gave up on: SIGTERM (it destroys), then SIGKILL and clean."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            if self.wait_exit(600) is None:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.reader.join(10)
        self.log.close()


# ---- the faults: each injects from outside and says what it did ------------------------------

def no_address(n: Night) -> str:
    """node-b's DHCP requests dropped on the management bridge, before it boots."""
    tap, mac = n.mgmt_nic("node-b")
    rules = (f"table bridge linklab_drill {{\n chain no_lease {{\n  type filter hook input "
             f"priority -200;\n  ether saddr {mac} udp dport 67 drop\n }}\n}}\n")
    cmd(["nft", "-f", "-"], f"{n.prefix}virt", input=rules, timeout=30)
    return f"nft in {n.prefix}virt drops DHCP from node-b ({mac}, {tap})"


def ssh_cut(n: Night) -> str:
    """node-a's management link down (QEMU's link state: the guest sees no carrier)."""
    tap, mac = n.mgmt_nic("node-a", timeout_s=60)
    cmd(["virsh", "-c", "qemu:///system", "domif-setlink", f"{n.prefix}node-a", mac, "down"],
        timeout=60)
    return f"virsh domif-setlink {n.prefix}node-a {mac} ({tap}) down"


# run on node-b, as root: for up to 30 s, the first peer agent (argv ``python -m
# linklab.twohost.peer``, never a shell naming it) whose half is built (namespaces exist) gets
# SIGKILL at once, on the node itself (a DHCP scenario's agent lives a few seconds under TCG:
# a round trip from the host came too late); prints its PID
_KILL_AGENT = shlex.join(["sudo", "python3", "-c", """import os, signal, sys, time
end = time.monotonic() + 30
while time.monotonic() < end:
    if os.path.isdir("/run/netns") and os.listdir("/run/netns"):
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                a = open(f"/proc/{p}/cmdline", "rb").read().split(b"\\0")
            except OSError:
                continue
            if a[1:3] == [b"-m", b"linklab.twohost.peer"]:
                os.kill(int(p), signal.SIGKILL)
                print(p)
                sys.exit(0)
    time.sleep(0.2)
sys.exit(1)
"""])


def peer_agent_killed(n: Night) -> str:
    """SIGKILL to the peer agent on node-b once its half is built and cells run."""
    def killed() -> str | None:       # each try waits up to 30 s on node-b itself
        res = n.ssh("node-b", _KILL_AGENT)
        pid = res.stdout.strip()
        return pid if res.returncode == 0 and pid.isdigit() else None
    pid = poll(killed, 900, 0, alive=lambda: n.proc.poll() is None)
    if pid is None:
        raise TimeoutError("no peer agent appeared on node-b")
    return f"kill -9 {pid} (python -m linklab.twohost.peer) on node-b"


def libvirtd_killed(n: Night) -> str:
    """SIGKILL to the night's own libvirtd, its PID from its ownership record."""
    record = n.records / f"{n.marker}.jsonl"
    entries = [json.loads(line) for line in record.read_text().splitlines()]
    pidfile = next(e["data"]["pidfile"] for e in entries
                   if e.get("obj") == "libvirt-daemon" and e.get("id") == "libvirtd")
    pid = int(Path(pidfile).read_text().split()[0])
    if Path(f"/proc/{pid}/comm").read_text().strip() != "libvirtd":
        raise RuntimeError(f"{pidfile}: pid {pid} is not libvirtd")
    os.kill(pid, signal.SIGKILL)
    return f"kill -9 {pid} (libvirtd, {pidfile})"


@dataclass(frozen=True)
class Fault:
    name: str
    trigger: str                  # the night's output line after which it is injected
    delay_s: float                # then this long, to land mid-step
    inject: Callable[[Night], str]
    named: str                    # the cause the night must name
    two_host: bool = False
    boot_timeout_s: int | None = None


SUITE_A = STEP + "connectivity suite and benchmarks on node-a$"
FAULTS = (
    Fault("libvirtd killed", SUITE_A, 10, libvirtd_killed, r"libvirtd \(pid \d+\) died mid-night"),
    Fault("ssh cut", SUITE_A, 10, ssh_cut, r"ssh to node-a lost mid-step"),
    Fault("no address", STEP + "bring the nodes up", 0, no_address,
          r"node-b never got an address within \d+ s", boot_timeout_s=BOOT_TIMEOUT_S),
    Fault("peer agent killed", STEP + "two-host scenarios split", 0, peer_agent_killed,
          r"the peer agent on node-b died mid-cell", two_host=True),
)
NIGHTLY_FAULTS = tuple(f.name for f in FAULTS)


def leftovers(n: Night) -> list[str]:
    """What of the night is still on this machine (empty is good)."""
    if not n.marker:
        return []
    p = n.prefix
    left = [f"namespace {x}" for x in os.listdir(NETNS) if x.startswith(p)] \
        if os.path.isdir(NETNS) else []
    vagrant_state = f"VAGRANT_DOTFILE_PATH={n.nightly_dir / 'vagrant-state'}".encode()
    for pid in (int(x) for x in os.listdir("/proc") if x.isdigit()):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if pid == os.getpid():
            continue
        if f"guest={p}".encode() in argv or f"linklab-{n.marker}-".encode() in argv or \
                p.encode() in argv and comm == "dnsmasq":
            left.append(f"process {pid} {comm}")
        elif vagrant_state in environ.split(b"\0"):
            left.append(f"process {pid} {comm} (the night's vagrant environment)")
    for pattern in LIBVIRT_FILES:
        left += [f"file {f}" for f in sorted(Path("/").glob(pattern.format(p=p).lstrip("/")))]
    left += [f"path {f}" for f in sorted(Path("/tmp").glob(f"linklab-{n.marker}-*"))]
    left += [f"record {f.name}" for f in sorted(n.records.glob("*.jsonl"))]
    return left


def one_fault(d: Drill, fault: Fault) -> dict:
    d.n += 1
    base = Path(d.workdir) / f"{d.n:02d}-nightly-{fault.name.replace(' ', '-')}"
    base.mkdir()
    row: dict = {"fault": fault.name, "broke": False, "named": False, "destroyed": False,
                 "seconds": 0.0, "left": [], "log": str(base / "night.log")}
    n = Night(base, fault.two_host, fault.boot_timeout_s)
    try:
        got = n.wait_line(r"^<== libvirt: namespace", LIBVIRT_WAIT_S + 1200) and \
            n.wait_line(fault.trigger, NIGHT_BOUND_S)
        if not got:
            row["error"] = f"the night never reached {fault.trigger!r}"
        else:
            time.sleep(fault.delay_s)
            row["injected"] = fault.inject(n)     # it returns once the fault has landed
            t_fault = time.monotonic()
            row["fault_at_s"] = round(t_fault - n.t0, 1)
            d.log(f"  {fault.name}: {row['injected']} at {row['fault_at_s']:.0f} s")
            rc = n.wait_exit(NIGHT_BOUND_S)
            row["rc"] = rc
            if rc is None:
                row["error"] = f"the night did not end within {NIGHT_BOUND_S:.0f} s of the fault"
            else:
                t_end = time.monotonic()
                n.reader.join(10)
                row["seconds"] = round(t_end - t_fault, 1)
                first = next((t for t, line in n.lines if "nightly: broken: " in line
                              or "nightly: stopping the step: " in line), None)
                row["broke_s"] = round(first - t_fault, 1) if first else None
                row["night_s"] = round(t_end - n.t0, 1)
    except Exception as exc:       # a drill step that breaks is a row with its error
        row["error"] = repr(exc)
    finally:
        n.stop()
    record = {}
    try:
        record = json.loads((n.night / "nightly.json").read_text())
    except (OSError, ValueError):
        pass
    last = next((line for _, line in reversed(n.lines)
                 if line.startswith(f"nightly {n.stamp}: ")), "")
    row["cause"] = record.get("cause", "")
    row["last_line"] = last
    row["broke"] = row.get("rc") == 3 and record.get("status") == "broken"
    row["named"] = bool(re.search(fault.named, row["cause"]) and re.search(fault.named, last))
    row["destroyed"] = any(s["title"] == "destroy the nodes" for s in record.get("steps", [])) \
        and any(line.startswith("<== libvirt stopped, namespace deleted") for _, line in n.lines)
    row["steps"] = [(s["title"], s["rc"], s["seconds"]) for s in record.get("steps", [])]
    row["left"] = leftovers(n)
    if row["left"] and n.marker:      # tidy up after a failed row, by the night's record
        subprocess.run([PY, "-m", "linklab.cli", "clean", "-q"], cwd=ROOT, timeout=600,
                       env={**os.environ, "LINKLAB_RECORD_DIR": str(n.records)},
                       capture_output=True, check=False)
    d.log(f"  {fault.name}: exit {row.get('rc')}, cause {row['cause']!r}, fault->broke "
          f"{row.get('broke_s')} s, fault->exit {row['seconds']} s, night {row.get('night_s')} s,"
          f" left {row['left'] or 'nothing'}" + (f"; ERROR {row['error']}" if "error" in row
                                                 else ""))
    return row


def nightly_faults(d: Drill, only: tuple[str, ...] = ()) -> list[dict]:
    """One dict per fault: fault, broke, named, destroyed, seconds, left (and the figures)."""
    return [one_fault(d, f) for f in FAULTS if not only or f.name in only]
