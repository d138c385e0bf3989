"""tracefs instances of the run's own: the network datapath's tracepoints, filtered in the
kernel by our device names and probe lengths, in one; the skb frees (``skb:kfree_skb``,
``skb:consume_skb``), which have no such field and see the whole machine, in another; both
removed by rmdir on exit and by ``linklab clean`` after a kill -9 (ownership kind
``tracefs``).

tracefs is reached through a *detached* mount (fsopen/fsmount, never attached to a path), so
it works where /sys/kernel/tracing is not mounted (this host, the VM guest) and leaves no
mount behind: the mount lives as long as the file descriptor. The instance itself is a
kernel object shared by every mount of tracefs, hence the ownership record.

An instance's name carries the PID of the process that made it
(``linklab-<marker>-anatomy[-frees]-<pid>``), and that process holds one of its files open
while it lives: the kernel refuses to remove an instance with an open file (``rmdir``:
EBUSY). So ``linklab clean`` can also remove an instance whose record is gone (a record
directory removed before anyone cleaned it: a drill's, a test's ``tmp_path``) once no record
lists it and its PID is dead, without ever taking a live run's — another user's, recorded in
another directory or seen from another PID namespace.

Buffers keep their oldest events when full (``options/overwrite`` 0): the kernel then counts
every event it could not record (``per_cpu/cpuN/stats``: ``dropped events``) at the moment
it happens, so a caller that reads the counters at the edges of a window knows whether
*that* window lost events.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from linklab.poll import poll

KIND = "tracefs"
# per CPU. The net events are filtered to our devices and lengths: a pass records a few hundred.
NET_BUFFER_KB = 512
# The frees (skb:kfree_skb, skb:consume_skb) have no device or length to filter on and see the
# whole machine: another user's UDP stream was measured dropping 34k-120k datagrams/s here,
# 44 bytes each in a buffer (1.5-5 MB/s); 4 MiB holds ~95k drops per CPU, several times what
# such a stream drops while a probe that is not delivered is waited for (0.2 s). Every
# possible CPU gets a buffer: on a big machine (its drops spread over more CPUs) they share
# FREES_TOTAL_KB.
FREES_BUFFER_KB = 4096
FREES_TOTAL_KB = 64 * 1024
# what a per-CPU stats file counts as not recorded: overwritten, or refused when full
LOST_COUNTERS = ("overrun", "commit overrun", "dropped events")
TRACE_CLOCK = "mono"   # CLOCK_MONOTONIC, the same on every CPU ("local", the default, is not)
# the net tracepoints every probe is counted at, in datapath order
NET_EVENTS = ("net/net_dev_queue", "net/net_dev_xmit", "net/netif_rx", "net/netif_receive_skb")
DROP_EVENT = "skb/kfree_skb"
CONSUME_EVENT = "skb/consume_skb"
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD
# the names :func:`instance` gives: linklab-<run marker>-<purpose>-<PID of the creating process>
OWNED_NAME = re.compile(r"^linklab-(?P<marker>[0-9a-z]+)-(?P<purpose>anatomy(?:-frees)?)"
                        r"-(?P<pid>[1-9][0-9]*)$")
# the file an instance's creator holds open while it lives (the kernel's guard against rmdir)
GUARD_FILE = "tracing_on"
# how long a reader may keep an instance busy at its removal
RMDIR_TIMEOUT_S = 1.0

_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432   # same numbers on every arch
_FSOPEN_CLOEXEC, _FSCONFIG_CMD_CREATE, _FSMOUNT_CLOEXEC = 1, 6, 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class TracefsError(RuntimeError):
    """tracefs cannot be used here; names the file or kernel option and what to do."""


def _sys(number: int, *args: object) -> int:
    ret = _libc.syscall(number, *args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


@contextmanager
def mounted() -> Iterator[int]:
    """A directory fd of a private, detached tracefs mount (gone when it is closed)."""
    try:
        ctx = _sys(_SYS_FSOPEN, b"tracefs", _FSOPEN_CLOEXEC)
    except OSError as exc:
        raise TracefsError(f"fsopen(tracefs): {exc.strerror}: the kernel lacks tracefs "
                           "(CONFIG_TRACING) or linklab is not root") from None
    try:
        _sys(_SYS_FSCONFIG, ctx, _FSCONFIG_CMD_CREATE, None, None, 0)
        mnt = _sys(_SYS_FSMOUNT, ctx, _FSMOUNT_CLOEXEC, 0)
    finally:
        os.close(ctx)
    try:
        root = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=mnt)
    finally:
        os.close(mnt)
    try:
        yield root
    finally:
        os.close(root)


def read(root: int, path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=root)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")
    finally:
        os.close(fd)


def write(root: int, path: str, value: str) -> None:
    """Write a tracefs control file; an error names the file and what the kernel said."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, dir_fd=root)
    try:
        os.write(fd, value.encode())
    except OSError as exc:
        raise TracefsError(f"tracefs {path}: writing {value[:120]!r}: {exc.strerror}") from None
    finally:
        os.close(fd)


def listdir(root: int, path: str) -> list[str]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=root)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def instance_path(name: str) -> str:
    return f"instances/{name}"


# ---- ownership kind "tracefs" (ownership.OBJECT_KINDS) -------------------------------------

def owned_exists(ident: str, data: dict) -> bool:
    """Does the tracefs instance ``ident`` still exist?"""
    with mounted() as root:
        return _exists(root, instance_path(ident))


def owned_remove(ident: str, data: dict) -> bool:
    """Remove the tracefs instance ``ident`` (its events, filters and buffer go with it).
    OSError EBUSY: a live process holds one of its files open (its creator does)."""
    with mounted() as root:
        try:
            os.rmdir(instance_path(ident), dir_fd=root)
        except FileNotFoundError:
            return False
        return True


def owned_by_name() -> dict[str, int]:
    """Every instance named as :func:`instance` names them: name -> the PID that made it.
    Empty where tracefs cannot be reached (not root, no CONFIG_TRACING): none of ours then."""
    try:
        names = instances()
    except (TracefsError, OSError):
        return {}
    return {n: int(m["pid"]) for n in names if (m := OWNED_NAME.match(n))}


def instances() -> list[str]:
    """The names of every tracefs instance on this machine (whoever made it)."""
    with mounted() as root:
        return listdir(root, "instances")


def _close_leaked(root: int, name: str) -> int:
    """Close this process's descriptors open on a file of instance ``name``; how many.

    A Ctrl-C during a slow open (``trace`` with O_TRUNC waits for the buffers' reset) makes
    CPython raise KeyboardInterrupt as the call returns, before the descriptor is stored: no
    ``finally`` can close it, and the kernel refuses rmdir while it is open (EBUSY) — the
    instance then outlives the process."""
    dev, prefix, closed = os.fstat(root).st_dev, f"/{instance_path(name)}/", 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}").startswith(prefix) and \
                    os.fstat(int(entry)).st_dev == dev:
                os.close(int(entry))
                closed += 1
        except OSError:
            continue        # the listing's own descriptor, or one closed meanwhile
    return closed


def _exists(root: int, path: str) -> bool:
    try:
        os.stat(path, dir_fd=root)
    except FileNotFoundError:
        return False
    return True


# ---- an instance -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    """One line of the instance's trace: a tracepoint hit."""

    ts: float
    cpu: int
    # net_dev_queue | net_dev_xmit | netif_rx | netif_receive_skb | kfree_skb
    event: str
    skbaddr: str
    dev: str = ""
    len: int = 0
    location: str = ""      # kfree_skb: the dropping function (offset stripped)
    reason: str = ""        # kfree_skb: the drop reason
    mark: str = ""          # tracing_mark_write: the text written to trace_marker


_LINE = re.compile(r"^\s*.*?-\d+\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>\d+\.\d+): "
                   r"(?P<event>\w+): (?P<fields>.*)$")
_FIELD = re.compile(r"(\w+)=(\S+)")
_REASON = re.compile(r"reason: (\w+)")


def parse(text: str) -> list[Event]:
    """The events of a ``trace`` file, in timestamp order."""
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        fields = dict(_FIELD.findall(m["fields"]))
        reason = _REASON.search(m["fields"])
        out.append(Event(float(m["ts"]), int(m["cpu"]), m["event"], fields.get("skbaddr", ""),
                         fields.get("dev", ""), int(fields.get("len", 0)),
                         fields.get("location", "").split("+")[0],
                         reason[1] if reason else "",
                         m["fields"].strip() if m["event"] == "tracing_mark_write" else ""))
    out.sort(key=lambda e: e.ts)
    return out


def counted(stats: str) -> tuple[int, int]:
    """(events kept, events not kept) of one CPU's buffer, from its ``per_cpu/cpuN/stats``."""
    counts = dict(re.findall(r"^([a-z ]+): (\d+)$", stats, re.M))
    return int(counts.get("entries", 0)), sum(int(counts.get(n, 0)) for n in LOST_COUNTERS)


def frees_buffer_kb(cpus: int) -> int:
    """The per-CPU buffer of the frees on a machine with ``cpus`` possible CPUs."""
    return max(NET_BUFFER_KB, min(FREES_BUFFER_KB, FREES_TOTAL_KB // max(cpus, 1)))


def net_filter(devices: Sequence[str], len_min: int, len_max: int) -> str:
    """The filter of the net events: our devices only, probe lengths only."""
    names = " || ".join(f'name == "{d}"' for d in devices)
    return f"({names}) && len >= {len_min} && len <= {len_max}"


# kfree_skb's fields are skbaddr, location, rx_sk, protocol and reason, consume_skb's skbaddr
# and location (no device, no length): the probe's own are found by skbaddr afterwards; only
# drops of non-IP frames are left out here
DROP_FILTER = f"protocol == {ETH_P_IP} || protocol == {ETH_P_IPV6}"
FREE_EVENTS = {DROP_EVENT: DROP_FILTER, CONSUME_EVENT: ""}


class Instance:
    """An owned tracefs instance: some events, each with its filter, into a buffer that keeps
    its oldest events when full and counts the rest."""

    def __init__(self, root: int, name: str) -> None:
        self.root = root
        self.name = name
        self.path = instance_path(name)
        self.cpus: list[str] = []

    def _p(self, rel: str) -> str:
        return f"{self.path}/{rel}"

    def configure(self, events: Mapping[str, str], buffer_kb: int) -> None:
        """Enable ``events`` (tracepoint -> filter, "" for none), stopped and empty."""
        write(self.root, self._p("tracing_on"), "0")
        write(self.root, self._p("buffer_size_kb"), str(buffer_kb))
        write(self.root, self._p("options/overwrite"), "0")
        # one clock for every CPU and both instances: their events are merged by timestamp
        write(self.root, self._p("trace_clock"), TRACE_CLOCK)
        for ev, flt in events.items():
            if flt:
                write(self.root, self._p(f"events/{ev}/filter"), flt)
            write(self.root, self._p(f"events/{ev}/enable"), "1")
        self.cpus = listdir(self.root, self._p("per_cpu"))
        self.clear()

    def start(self) -> None:
        write(self.root, self._p("tracing_on"), "1")

    def pause(self) -> None:
        write(self.root, self._p("tracing_on"), "0")

    def clear(self) -> None:
        """Empty the buffer; its loss counters start again from 0."""
        write(self.root, self._p("trace"), "")

    def mark(self, text: str) -> None:
        """A line in this instance's trace, in timestamp order with the events."""
        write(self.root, self._p("trace_marker"), text)

    def counts(self) -> tuple[int, int]:
        """(events kept, events not recorded: a buffer full, or overrun) since the last
        clear, all CPUs."""
        per_cpu = [counted(read(self.root, self._p(f"per_cpu/{cpu}/stats")))
                   for cpu in self.cpus]
        return sum(k for k, _ in per_cpu), sum(n for _, n in per_cpu)

    def lost(self) -> int:
        return self.counts()[1]

    def events(self) -> list[Event]:
        """The recorded events, in timestamp order (read while paused: reading does not
        consume them)."""
        return parse(read(self.root, self._p("trace")))


@contextmanager
def instance(run, purpose: str = "anatomy") -> Iterator[Instance]:
    """A fresh instance owned by ``run`` (recorded before mkdir, rmdir'ed on exit)."""
    name = f"linklab-{run.marker}-{purpose}-{os.getpid()}"
    with mounted() as root:
        if not _exists(root, "instances"):
            raise TracefsError("tracefs has no instances/ directory: the kernel lacks "
                               "CONFIG_TRACING instances support")
        for ev in (*NET_EVENTS, *FREE_EVENTS):
            if not _exists(root, f"events/{ev}"):
                raise TracefsError(f"tracefs: kernel lacks tracepoint {ev} (CONFIG_NET / "
                                   "CONFIG_TRACEPOINTS)")
        run.own_object(KIND, name)
        try:
            os.mkdir(instance_path(name), dir_fd=root)
        except FileExistsError:
            raise TracefsError(f"tracefs {instance_path(name)} already exists: another "
                               "measurement of this process is running") from None
        guard: int | None = None
        try:
            # held open while this process lives: rmdir by anyone else fails with EBUSY
            guard = os.open(f"{instance_path(name)}/{GUARD_FILE}", os.O_RDONLY | os.O_CLOEXEC,
                            dir_fd=root)
            yield Instance(root, name)
        finally:
            if guard is not None:
                os.close(guard)
            def removed() -> bool:
                try:
                    os.rmdir(instance_path(name), dir_fd=root)
                    return True
                except OSError as exc:   # EBUSY while a file of it is still open
                    if exc.errno != errno.EBUSY:
                        raise
                    _close_leaked(root, name)   # ours, lost to a Ctrl-C; else another reader's
                    return False

            if not poll(removed, RMDIR_TIMEOUT_S, interval=0.02):
                raise OSError(errno.EBUSY, f"tracefs {instance_path(name)} still in use "
                                           f"after {RMDIR_TIMEOUT_S:g} s")
            run.disown_object(KIND, name)
