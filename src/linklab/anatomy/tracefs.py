"""A tracefs instance of the run's own: tracepoints of the network datapath, filtered by our
device names and probe lengths, into a bounded buffer; removed by rmdir on exit and by
``linklab clean`` after a kill -9 (ownership kind ``tracefs``).

tracefs is reached through a *detached* mount (fsopen/fsmount, never attached to a path), so
it works where /sys/kernel/tracing is not mounted (this host, the VM guest) and leaves no
mount behind: the mount lives as long as the file descriptor. The instance itself is a
kernel object shared by every mount of tracefs, hence the ownership record.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

KIND = "tracefs"
BUFFER_KB = 512        # per CPU; a measurement records a few hundred events
# the net tracepoints every probe is counted at, in datapath order
NET_EVENTS = ("net/net_dev_queue", "net/net_dev_xmit", "net/netif_rx", "net/netif_receive_skb")
DROP_EVENT = "skb/kfree_skb"
ETH_P_IP, ETH_P_IPV6 = 0x0800, 0x86DD

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


def instance_path(name: str) -> str:
    return f"instances/{name}"


# ---- ownership kind "tracefs" (ownership.OBJECT_KINDS) -------------------------------------

def owned_exists(ident: str, data: dict) -> bool:
    """Does the tracefs instance ``ident`` still exist?"""
    with mounted() as root:
        return _exists(root, instance_path(ident))


def owned_remove(ident: str, data: dict) -> bool:
    """Remove the tracefs instance ``ident`` (its events, filters and buffer go with it)."""
    with mounted() as root:
        try:
            os.rmdir(instance_path(ident), dir_fd=root)
        except FileNotFoundError:
            return False
        return True


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


def lost(text: str) -> int:
    """Events the bounded buffer overwrote (header ``entries-in-buffer/entries-written``)."""
    m = re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", text)
    return int(m[2]) - int(m[1]) if m else 0


def net_filter(devices: Sequence[str], len_min: int, len_max: int) -> str:
    """The filter of the net events: our devices only, probe lengths only."""
    names = " || ".join(f'name == "{d}"' for d in devices)
    return f"({names}) && len >= {len_min} && len <= {len_max}"


DROP_FILTER = f"protocol == {ETH_P_IP} || protocol == {ETH_P_IPV6}"


class Instance:
    """An owned tracefs instance with the datapath events enabled and filtered."""

    def __init__(self, root: int, name: str) -> None:
        self.root = root
        self.name = name
        self.path = instance_path(name)

    def _p(self, rel: str) -> str:
        return f"{self.path}/{rel}"

    def configure(self, devices: Sequence[str], len_min: int, len_max: int) -> None:
        write(self.root, self._p("tracing_on"), "0")
        write(self.root, self._p("buffer_size_kb"), str(BUFFER_KB))
        flt = net_filter(devices, len_min, len_max)
        for ev in NET_EVENTS:
            write(self.root, self._p(f"events/{ev}/filter"), flt)
            write(self.root, self._p(f"events/{ev}/enable"), "1")
        write(self.root, self._p(f"events/{DROP_EVENT}/filter"), DROP_FILTER)
        write(self.root, self._p(f"events/{DROP_EVENT}/enable"), "1")
        write(self.root, self._p("trace"), "")

    def start(self) -> None:
        write(self.root, self._p("tracing_on"), "1")

    def mark(self, text: str) -> None:
        """A line in this instance's trace, in timestamp order with the events."""
        write(self.root, self._p("trace_marker"), text)

    def stop(self) -> list[Event]:
        """Stop recording; the events, or an error when the buffer lost some."""
        write(self.root, self._p("tracing_on"), "0")
        text = read(self.root, self._p("trace"))
        if (n := lost(text)):
            raise TracefsError(f"tracefs {self.path}: the {BUFFER_KB} KiB/CPU buffer lost {n} "
                               "events; counts would not be exact")
        return parse(text)


@contextmanager
def instance(run, purpose: str = "anatomy") -> Iterator[Instance]:
    """A fresh instance owned by ``run`` (recorded before mkdir, rmdir'ed on exit)."""
    name = f"linklab-{run.marker}-{purpose}-{os.getpid()}"
    with mounted() as root:
        if not _exists(root, "instances"):
            raise TracefsError("tracefs has no instances/ directory: the kernel lacks "
                               "CONFIG_TRACING instances support")
        for ev in (*NET_EVENTS, DROP_EVENT):
            if not _exists(root, f"events/{ev}"):
                raise TracefsError(f"tracefs: kernel lacks tracepoint {ev} (CONFIG_NET / "
                                   "CONFIG_TRACEPOINTS)")
        run.own_object(KIND, name)
        try:
            os.mkdir(instance_path(name), dir_fd=root)
        except FileExistsError:
            raise TracefsError(f"tracefs {instance_path(name)} already exists: another "
                               "measurement of this process is running") from None
        try:
            yield Instance(root, name)
        finally:
            for attempt in range(50):
                try:
                    os.rmdir(instance_path(name), dir_fd=root)
                    break
                except OSError as exc:   # EBUSY while a reader still holds a file open
                    if exc.errno != errno.EBUSY or attempt == 49:
                        raise
                    time.sleep(0.02)
            run.disown_object(KIND, name)
