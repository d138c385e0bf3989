"""libvirt for the nightly: virtlogd and libvirtd inside a network namespace of the run's own.

Every bridge, dnsmasq, firewall rule and QEMU process lives in that namespace, so nothing
appears in the default one. The daemons, the storage pool, the networks, the domains and their
volumes are ownership records (kinds ``libvirt-*`` in :data:`linklab.ownership.OBJECT_KINDS`),
written before each object exists; ``linklab clean`` removes a dead run's objects last-created
first: through the daemon while it still answers, from libvirt's state files and by PID when
it does not. libvirt's ``default`` network is never started.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from linklab.cmd import Result, cmd, proc_starttime, stop_pid
from linklab.netns import NetNS
from linklab.ownership import Run

URI = "qemu:///system"
SOCKET = "/run/libvirt/libvirt-sock"
ETC = Path("/etc/libvirt/qemu")
RUN = Path("/run/libvirt")
DNSMASQ = Path("/var/lib/libvirt/dnsmasq")
LIB = Path("/var/lib/libvirt/qemu")         # a running domain's private directories
LOGS = Path("/var/log/libvirt/qemu")
DAEMONS = ("virtlogd", "libvirtd")
LOCK = "/run/lock/linklab-libvirt.lock"


class VirtError(RuntimeError):
    """libvirt could not be started or did not answer in time."""


def virsh(*args: str, timeout: float = 60, check: bool = False) -> Result:
    return cmd(["virsh", "-c", URI, "-q", *args], timeout=timeout, check=check)


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _zombie(pid: int) -> bool:
    """Exited, not yet reaped (a daemon's parent is PID 1 here, which may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")


def _pid_from(pidfile: str | Path) -> int | None:
    try:
        return int(Path(pidfile).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _in_namespace(pid: int, ns_path: str) -> bool:
    try:
        a, b = os.stat(f"/proc/{pid}/ns/net"), os.stat(ns_path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def daemon_pid(name: str, data: dict) -> int | None:
    """The recorded daemon's PID if that process still runs (same name, same start time)."""
    pid = _pid_from(data["pidfile"])
    if pid is None or _comm(pid) != name:
        return None
    start = data.get("start")
    if start is not None and proc_starttime(pid) != start:
        return None
    return pid


def libvirtd_answers() -> bool:
    return os.path.exists(SOCKET) and virsh("version", timeout=15).returncode == 0


# ownership: one module for the libvirt-* kinds; ``data["what"]`` says which.

def owned_exists(ident: str, data: dict) -> bool:
    what = data["what"]
    if what == "daemon":
        return daemon_pid(ident, data) is not None
    if what == "domain":     # its QEMU log too: libvirt keeps it after undefine
        return (ETC / f"{ident}.xml").exists() or (RUN / "qemu" / f"{ident}.xml").exists() \
            or (LOGS / f"{ident}.log").exists()
    if what == "network":   # its definition, or the run state libvirt leaves after undefine
        return any(p.exists() for p in _network_files(ident)) or \
            (RUN / "network" / ident).is_dir()
    if what == "pool":
        return (RUN / "storage" / f"{ident}.xml").exists() or Path(data["path"]).exists()
    if what == "volume":
        return Path(data["path"]).exists()
    raise KeyError(f"libvirt ownership: unknown object {what!r} ({ident})")


def _network_files(name: str) -> tuple[Path, ...]:
    return (ETC / "networks" / f"{name}.xml", ETC / "networks" / "autostart" / f"{name}.xml",
            RUN / "network" / f"{name}.xml", RUN / "network" / f"{name}.pid")


def _qemu_pid(domain: str) -> int | None:
    pid = _pid_from(RUN / "qemu" / f"{domain}.pid")
    if pid and any(a == f"guest={domain}," or a.startswith(f"guest={domain},")
                   for a in _cmdline(pid)):
        return pid
    return None


def owned_remove(ident: str, data: dict) -> bool:
    """Remove one object; through libvirtd when it answers, else from its files and PIDs."""
    if not owned_exists(ident, data):
        return False
    what = data["what"]
    live = what != "daemon" and libvirtd_answers()
    if what == "daemon":
        pid = daemon_pid(ident, data)
        if pid is not None:
            stop_pid(pid, proc_starttime(pid), grace=10.0)
        Path(data["pidfile"]).unlink(missing_ok=True)
    elif what == "domain":
        if live:
            virsh("destroy", ident, timeout=60)
            virsh("undefine", ident, "--nvram", timeout=60)
        pid = _qemu_pid(ident)
        if pid is not None:
            stop_pid(pid, proc_starttime(pid), grace=5.0)
        for f in (ETC / f"{ident}.xml", RUN / "qemu" / f"{ident}.xml",
                  RUN / "qemu" / f"{ident}.pid", LOGS / f"{ident}.log"):
            f.unlink(missing_ok=True)
        # what libvirtd removes when a domain stops, left when it died first
        for d in (*LIB.glob(f"domain-*-{ident}"), *(LIB / "channel" / "target").glob(
                f"domain-*-{ident}")):
            shutil.rmtree(d, ignore_errors=True)
    elif what == "network":
        if live:
            virsh("net-destroy", ident, timeout=60)
            virsh("net-undefine", ident, timeout=60)
        pid = _pid_from(RUN / "network" / f"{ident}.pid")
        if pid is not None and _comm(pid) == "dnsmasq" and \
                any(a.endswith(f"/{ident}.conf") for a in _cmdline(pid)):
            stop_pid(pid, proc_starttime(pid), grace=2.0)
        for f in _network_files(ident):
            f.unlink(missing_ok=True)
        shutil.rmtree(RUN / "network" / ident, ignore_errors=True)   # its ports/
        for f in DNSMASQ.glob(f"{ident}.*"):     # its dnsmasq's config, hosts and leases
            f.unlink(missing_ok=True)
    elif what == "pool":
        if live:
            for line in virsh("vol-list", ident, timeout=60).stdout.splitlines():
                if line.split():
                    virsh("vol-delete", "--pool", ident, line.split()[0], timeout=60)
            virsh("pool-destroy", ident, timeout=60)
        shutil.rmtree(data["path"], ignore_errors=True)
        (RUN / "storage" / f"{ident}.xml").unlink(missing_ok=True)
    elif what == "volume":
        if live:
            virsh("vol-delete", "--pool", data["pool"], ident, timeout=60)
        Path(data["path"]).unlink(missing_ok=True)
    return True


@dataclass(frozen=True)
class Names:
    """The run's libvirt names: every one carries the run marker, none is libvirt's default."""

    prefix: str

    @property
    def pool(self) -> str:
        return f"{self.prefix}pool"

    def network(self, role: str) -> str:
        return f"{self.prefix}{role}"

    def domain(self, node: str) -> str:
        return f"{self.prefix}{node}"


class Libvirt:
    """virtlogd + libvirtd started by this run inside its own namespace, with a transient
    storage pool in a directory of the run's; everything released LIFO by :meth:`close`."""

    def __init__(self, run: Run, *, start_timeout_s: float = 120.0,
                 lock_wait_s: float = 0.0) -> None:
        # one system libvirtd per machine (one socket, one /etc/libvirt): one run at a time
        self._lock = open(LOCK, "w")
        deadline = time.monotonic() + lock_wait_s
        while True:
            try:
                fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self._lock.close()
                    raise VirtError(f"another linklab run holds libvirt ({LOCK})") from None
                time.sleep(1.0)
        if os.path.exists(SOCKET) and libvirtd_answers():
            self._lock.close()
            raise VirtError(f"a libvirtd already answers on {SOCKET}: the nightly starts its "
                            "own inside a namespace; stop that daemon first")
        self.run = run
        self.names = Names(f"ll{run.marker}-")
        self._stack = ExitStack()
        self.timings: dict[str, float] = {}
        self.pids: dict[str, tuple[int, int | None]] = {}   # daemon -> (pid, start time)
        self._stack.callback(self._lock.close)
        try:
            self._start(start_timeout_s)
        except BaseException:
            self._stack.close()
            raise

    def own(self, what: str, ident: str, **data: object) -> None:
        self.run.own_object(f"libvirt-{what}", ident, what=what, **data)

    def disown(self, what: str, ident: str) -> None:
        self.run.disown_object(f"libvirt-{what}", ident)

    def _start(self, timeout_s: float) -> None:
        t0 = time.monotonic()
        self.state = Path(self.run.tmpdir("virt"))
        self._stack.callback(self._remove_state)
        self.state.chmod(0o711)   # QEMU runs as libvirt-qemu: it must reach the pool below
        ns_name = self.run.ns_name("virt")
        self.run.own_namespace(ns_name)
        self.ns = NetNS(ns_name)
        self._stack.callback(self._close_ns, ns_name)
        cmd(["ip", "link", "set", "lo", "up"], ns=self.ns)
        for name in DAEMONS:
            pidfile = self.state / f"{name}.pid"
            self.own("daemon", name, pidfile=str(pidfile), ns=ns_name)
            self._stack.callback(self._stop_daemon, name, pidfile)
            cmd([name, "-d", "-p", str(pidfile)], ns=self.ns, timeout=30)
            pid = self._wait(lambda f=pidfile: _pid_from(f), f"{name} to write {pidfile}", 30)
            if not _in_namespace(pid, self.ns.path):
                raise VirtError(f"{name} (pid {pid}) is not inside namespace {ns_name}")
            self.pids[name] = (pid, proc_starttime(pid))
        self._wait(libvirtd_answers, f"libvirtd to answer on {SOCKET}", timeout_s)
        self.timings["daemons_s"] = round(time.monotonic() - t0, 1)
        pool_dir = self.state / "pool"
        self.own("pool", self.names.pool, path=str(pool_dir))
        self._stack.callback(self._remove, "pool", self.names.pool, {"path": str(pool_dir)})
        pool_dir.mkdir(mode=0o711, exist_ok=True)
        pool_dir.chmod(0o711)   # QEMU runs as libvirt-qemu: it must reach the images
        virsh("pool-create-as", self.names.pool, "dir", "--target", str(pool_dir), check=True)

    @staticmethod
    def _wait(probe, what: str, timeout_s: float):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = probe()
            if got:
                return got
            time.sleep(0.5)
        raise VirtError(f"libvirt: timed out after {timeout_s:.0f} s waiting for {what}")

    def own_domain(self, node: str) -> None:
        """Record a domain vagrant is about to define (and its disk volume)."""
        dom = self.names.domain(node)
        self.own("domain", dom)
        vol = f"{dom}.img"
        self.own("volume", vol, pool=self.names.pool, path=str(self.state / "pool" / vol))
        self._stack.callback(self._remove, "volume", vol,
                             {"pool": self.names.pool, "path": str(self.state / "pool" / vol)})
        self._stack.callback(self._remove, "domain", dom, {})

    def own_network(self, role: str) -> None:
        net = self.names.network(role)
        self.own("network", net)
        self._stack.callback(self._remove, "network", net, {})

    def _remove(self, what: str, ident: str, data: dict) -> None:
        owned_remove(ident, {"what": what, **data})
        self.disown(what, ident)

    def _stop_daemon(self, name: str, pidfile: Path) -> None:
        data = {"what": "daemon", "pidfile": str(pidfile)}
        owned_remove(name, data)
        self.disown("daemon", name)

    def _remove_state(self) -> None:
        shutil.rmtree(self.state, ignore_errors=True)
        self.run.disown_path(str(self.state))

    def _close_ns(self, name: str) -> None:
        # what the night started in its namespace and that outlives it (ssh ControlPersist
        # masters of vagrant's rsync, a dnsmasq of a network libvirt did not destroy)
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            if pid != os.getpid() and _in_namespace(pid, self.ns.path):
                stop_pid(pid, proc_starttime(pid), grace=2.0)
        self.ns.close()
        self.run.disown_namespace(name)

    def daemon_died(self) -> str | None:
        """Which of the run's daemons is gone (killed, crashed), if one is."""
        for name, (pid, start) in self.pids.items():
            if proc_starttime(pid) != start or _zombie(pid):
                return f"{name} (pid {pid}) died mid-night"
        return None

    def address(self, node: str) -> tuple[bool, str | None]:
        """(is the node's domain running, its lease's address on the management network)."""
        dom, mgmt = self.names.domain(node), self.names.network("mgmt")
        if virsh("domstate", dom, timeout=30).stdout.strip() != "running":
            return False, None
        macs = [f[4].lower() for f in (line.split() for line in
                                       virsh("domiflist", dom, timeout=30).stdout.splitlines())
                if len(f) >= 5 and f[2] == mgmt]
        for line in virsh("net-dhcp-leases", mgmt, timeout=30).stdout.splitlines():
            f = line.split()
            if len(f) >= 5 and f[2].lower() in macs:
                return True, f[4].split("/")[0]
        return True, None

    def leftovers(self) -> list[str]:
        """What libvirt still lists under this run's prefix (empty after a clean close)."""
        out = []
        for kind, args in (("domain", ("list", "--all", "--name")),
                           ("network", ("net-list", "--all", "--name")),
                           ("pool", ("pool-list", "--all", "--name"))):
            for line in virsh(*args, timeout=30).stdout.split():
                if line.startswith(self.names.prefix):
                    out.append(f"{kind} {line}")
        return out

    def close(self) -> None:
        self._stack.close()


def sigterm_as_interrupt() -> None:
    """A cancelled CI job (SIGTERM) unwinds like Ctrl-C, so every owner releases."""
    def raise_interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, raise_interrupt)


def describe(env: Libvirt) -> str:
    return json.dumps({"namespace": env.ns.name, "prefix": env.names.prefix,
                       "pool": env.names.pool})
