"""Real DHCPv4 servers (Kea, dnsmasq) run inside a suite namespace, one per test.

Each server is a context manager: it writes its own config and lease file into a fresh
run-owned temporary directory, starts the daemon with :func:`linklab.cmd.bkg` inside the
server namespace bound to one suite interface, waits until *that process* holds UDP port 67
(never a fixed sleep), and on exit stops it by PID, waits for it and removes the directory
(lease file included). A server that dies or never binds raises :class:`ServerError` with
the tail of its log.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from linklab.cmd import NamespaceLike, bkg, cmd, require
from linklab.dhcp.leases import Lease, read_leases
from linklab.ownership import Run
from linklab.suite import time_scale

SCALE = time_scale()
READY_TIMEOUT_S = 10.0 * SCALE   # polled: only a server that never binds waits it out
                                 # (Kea took over 25 s to bind in a TCG guest on a busy host)
DHCP_SERVER_PORT = 67
LEASE_TIME_S = 3600
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class ServerOption:
    """One server configuration under test: software and how it identifies clients."""

    software: str        # kea | dnsmasq
    option: str          # kea: match-client-id | no-match-client-id; dnsmasq: default | ignore-clid

    @property
    def label(self) -> str:
        return f"{self.software}-{self.option}"


SERVER_OPTIONS: tuple[ServerOption, ...] = (
    ServerOption("kea", "match-client-id"),
    ServerOption("kea", "no-match-client-id"),
    ServerOption("dnsmasq", "default"),
    ServerOption("dnsmasq", "ignore-clid"),
)
OPTIONS = {o.label: o for o in SERVER_OPTIONS}


class ServerError(RuntimeError):
    """A DHCP server failed to start or to bind; carries its log tail."""


@dataclass(frozen=True)
class Pool:
    """The subnet a server serves on its interface and the range it hands out."""

    subnet: ipaddress.IPv4Network
    first: ipaddress.IPv4Address
    last: ipaddress.IPv4Address

    def __post_init__(self) -> None:
        if self.first > self.last:
            raise ValueError(f"DHCP pool {self.first}-{self.last}: first is after last")
        for end in (self.first, self.last):
            if end not in self.subnet:
                raise ValueError(f"DHCP pool {self.first}-{self.last}: {end} is outside the "
                                 f"served subnet {self.subnet}")


@dataclass
class RunningServer:
    """A started server: where its leases and log are, and its process."""

    option: ServerOption
    ns: str
    iface: str
    workdir: Path
    lease_path: Path
    log_path: Path
    argv: list[str]
    pid: int = 0
    started_s: float = 0.0      # seconds from spawn to port 67 bound
    extra: dict = field(default_factory=dict)

    @property
    def lease_format(self) -> str:
        return self.option.software

    def leases(self) -> list[Lease]:
        return read_leases(self.lease_path, self.lease_format)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"


# ---- configuration -----------------------------------------------------------------------

def kea_config(iface: str, pool: Pool, lease_path: Path, match_client_id: bool) -> dict:
    """A kea-dhcp4 configuration: one interface, one subnet, memfile leases, no control
    socket, no lease file cleanup process, logging to stdout."""
    return {"Dhcp4": {
        "interfaces-config": {"interfaces": [iface], "dhcp-socket-type": "raw",
                              "service-sockets-require-all": True},
        "lease-database": {"type": "memfile", "persist": True, "name": str(lease_path),
                           "lfc-interval": 0},
        "match-client-id": match_client_id,
        "valid-lifetime": LEASE_TIME_S,
        "subnet4": [{"id": 1, "subnet": str(pool.subnet),
                     "pools": [{"pool": f"{pool.first} - {pool.last}"}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "INFO",
                     "output_options": [{"output": "stdout"}]}],
    }}


def kea_argv(config_path: Path) -> list[str]:
    return [require("kea-dhcp4", "kea-dhcp4-server"), "-c", str(config_path)]


def dnsmasq_argv(iface: str, pool: Pool, lease_path: Path, pid_path: Path,
                 ignore_clid: bool) -> list[str]:
    """dnsmasq as a DHCP server only: no DNS (--port=0), no system config, no ping before
    offering (it delays the first OFFER ~3 s), bound to ``iface`` alone."""
    argv = [require("dnsmasq", "dnsmasq-base"), "--keep-in-foreground", "--conf-file=/dev/null",
            "--port=0", "--no-ping", "--no-hosts", "--no-resolv", f"--interface={iface}",
            "--bind-interfaces", "--except-interface=lo",
            f"--dhcp-range={pool.first},{pool.last},{pool.subnet.netmask},{LEASE_TIME_S}",
            f"--dhcp-leasefile={lease_path}", f"--pid-file={pid_path}", "--log-dhcp",
            "--log-facility=-", "--user=root", "--group=root"]
    if ignore_clid:
        argv.append("--dhcp-ignore-clid")
    return argv


# ---- readiness ------------------------------------------------------------------------------

def _socket_inodes(pid: int) -> set[str]:
    out = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def holds_udp_port(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a UDP socket bound to ``port`` (read from
    /proc/PID/net/udp, i.e. inside the process's own network namespace)."""
    try:
        with open(f"/proc/{pid}/net/udp") as fh:
            rows = fh.read().splitlines()[1:]
    except OSError:
        return False
    bound = {f[9] for f in (r.split() for r in rows)
             if len(f) > 9 and int(f[1].rsplit(":", 1)[1], 16) == port}
    return bool(bound & _socket_inodes(pid))


def wait_ready(proc, server: RunningServer, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Poll until the server process holds UDP port 67; raise ServerError with its log tail
    if it exits or does not bind within ``timeout_s``."""
    t0 = time.monotonic()
    delay = 0.002
    while True:
        if proc.poll() is not None:
            raise ServerError(f"{server.option.software} in namespace {server.ns} on "
                              f"{server.iface} exited with status {proc.returncode} before "
                              f"binding UDP port {DHCP_SERVER_PORT}; log tail:\n"
                              f"{server.log_tail()}")
        if holds_udp_port(proc.pid, DHCP_SERVER_PORT):
            server.started_s = time.monotonic() - t0
            return
        if time.monotonic() - t0 > timeout_s:
            raise ServerError(f"{server.option.software} in namespace {server.ns} on "
                              f"{server.iface} did not bind UDP port {DHCP_SERVER_PORT} within "
                              f"{timeout_s:g}s (port taken or interface unusable?); log tail:\n"
                              f"{server.log_tail()}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


# ---- the server context manager -----------------------------------------------------------

def check_interface(ns: NamespaceLike | str, iface: str, pool: Pool) -> None:
    """The interface must exist in ``ns`` and hold an address in the served subnet (dnsmasq
    would otherwise start and serve nothing, Kea would skip the interface)."""
    res = cmd(["ip", "-j", "addr", "show"], ns=ns)
    links = {link["ifname"]: link for link in json.loads(res.stdout or "[]")}
    if iface not in links:
        raise ServerError(f"DHCP server interface {iface!r} does not exist in namespace "
                          f"{_ns_name(ns)} (has: {', '.join(sorted(links))})")
    addrs = [ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
             for a in links[iface].get("addr_info", []) if a.get("family") == "inet"]
    if not any(a.network == pool.subnet for a in addrs):
        raise ServerError(f"DHCP server interface {iface!r} in namespace {_ns_name(ns)} has no "
                          f"address in the served subnet {pool.subnet} "
                          f"(has: {', '.join(map(str, addrs)) or 'none'})")


def _ns_name(ns: NamespaceLike | str) -> str:
    return ns if isinstance(ns, str) else getattr(ns, "name", ns.path)


@contextmanager
def dhcp_server(option: ServerOption | str, ns: NamespaceLike | str, iface: str, pool: Pool,
                run: Run, *, ready_timeout_s: float = READY_TIMEOUT_S
                ) -> Iterator[RunningServer]:
    """Start ``option`` (e.g. ``kea-match-client-id``) inside ``ns`` on ``iface``; yield the
    running server; stop it by PID and delete its config, log and lease file on exit."""
    if isinstance(option, str):
        if option not in OPTIONS:
            raise ValueError(f"unknown DHCP server option {option!r} "
                             f"(known: {', '.join(OPTIONS)})")
        option = OPTIONS[option]
    check_interface(ns, iface, pool)
    workdir = Path(run.tmpdir(f"dhcp-{option.software}"))
    try:
        if option.software == "kea":
            lease_path = workdir / "kea-leases4.csv"
            config_path = workdir / "kea-dhcp4.json"
            config_path.write_text(json.dumps(kea_config(
                iface, pool, lease_path, match_client_id=option.option == "match-client-id"),
                indent=2))
            argv = kea_argv(config_path)
            # pid and logger lock files go to the work dir, not /run/kea
            env = {**os.environ, "KEA_PIDFILE_DIR": str(workdir),
                   "KEA_LOCKFILE_DIR": str(workdir)}
        elif option.software == "dnsmasq":
            lease_path = workdir / "dnsmasq.leases"
            argv = dnsmasq_argv(iface, pool, lease_path, workdir / "dnsmasq.pid",
                                ignore_clid=option.option == "ignore-clid")
            env = None
        else:
            raise ValueError(f"unknown DHCP server software {option.software!r}")
        server = RunningServer(option, _ns_name(ns), iface, workdir, lease_path,
                               workdir / "server.log", argv)
        with open(server.log_path, "w") as log, \
                bkg(argv, ns=ns, owner=run, stdout=log, stderr=log, env=env) as proc:
            server.pid = proc.pid
            wait_ready(proc, server, ready_timeout_s)
            yield server
            if proc.poll() is not None:
                raise ServerError(f"{option.software} in namespace {server.ns} died during the "
                                  f"test (status {proc.returncode}); log tail:\n"
                                  f"{server.log_tail()}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        run.disown_path(str(workdir))
