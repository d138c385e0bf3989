"""Network namespaces owned in-process: create, enter, delete — no helper processes.

``ip netns add`` semantics (a bind mount under /run/netns) done with unshare(2),
mount(2) and setns(2) on the calling thread, so a namespace costs well under a
millisecond and a netlink socket opened inside it is bound to it for its lifetime.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
from contextlib import AbstractContextManager

from pyroute2 import IPRoute

from linklab.nl import Rtnl
from linklab.nsfs import CLONE_NEWNET, NETNS_DIR, entered, setns
from linklab.nsfs import check as _check
from linklab.nsfs import libc as _libc

__all__ = ["NETNS_DIR", "NetNS", "delete_named", "entered", "setns"]

MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2

def _is_mount_point(path: str) -> bool:
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == path for line in fh)


_netns_dir_ready = False


def _prepare_netns_dir() -> None:
    """Make /run/netns a shared mount point once, exactly as ``ip netns add`` does
    (a bind mount of the directory onto itself only when it is not a mount point yet)."""
    global _netns_dir_ready
    if _netns_dir_ready:
        return
    os.makedirs(NETNS_DIR, exist_ok=True)
    os.makedirs("/run/linklab", exist_ok=True)
    with open("/run/linklab/.netns.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _is_mount_point(NETNS_DIR):
            _check(_libc.mount(NETNS_DIR.encode(), NETNS_DIR.encode(), b"none", MS_BIND, None),
                   f"bind mount {NETNS_DIR}")
        _check(_libc.mount(b"none", NETNS_DIR.encode(), None, MS_SHARED | MS_REC, None),
               f"make {NETNS_DIR} shared")
    _netns_dir_ready = True


class NetNS:
    """One named network namespace: created on construction, deleted by :meth:`close`.

    ``nl`` is a lean rtnetlink socket for writes (:mod:`linklab.nl`), ``ipr`` a pyroute2
    IPRoute for reads; both are bound to the namespace.
    """

    def __init__(self, name: str) -> None:
        _prepare_netns_dir()
        self.name = name
        self.path = f"{NETNS_DIR}/{name}"
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_CLOEXEC, 0o444)
        os.close(fd)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
                try:
                    _check(_libc.mount(b"/proc/thread-self/ns/net", self.path.encode(), b"none",
                                       MS_BIND, None), f"bind mount {self.path}")
                    self.fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
                    self.nl = Rtnl()
                    self._ipr: IPRoute | None = None
                finally:
                    setns(home)
            except BaseException:
                _remove(self.path)
                raise
        finally:
            os.close(home)

    @property
    def ipr(self) -> IPRoute:
        """A pyroute2 IPRoute bound to this namespace (opened on first use), for reads."""
        if self._ipr is None:
            with self.enter():
                self._ipr = IPRoute()
        return self._ipr

    def enter(self) -> AbstractContextManager[None]:
        """Context manager: the calling thread runs inside this namespace."""
        return entered(self.fd)

    def sysctl(self, key: str, value: str | int) -> None:
        """Write a per-namespace sysctl such as ``net/ipv4/ip_forward``."""
        with self.enter():
            with open(f"/proc/sys/{key}", "w") as fh:
                fh.write(str(value))

    def read_sysctl(self, key: str) -> str:
        with self.enter():
            with open(f"/proc/sys/{key}") as fh:
                return fh.read().strip()

    def close(self) -> None:
        """Delete the namespace (the kernel frees its links once the last user is gone)."""
        if self._ipr is not None:
            self._ipr.close()
        self.nl.close()
        os.close(self.fd)
        _remove(self.path)

    def __repr__(self) -> str:
        return f"NetNS({self.name!r})"


def _remove(path: str) -> None:
    ret = _libc.umount2(path.encode(), MNT_DETACH)
    if ret != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
        _check(ret, f"umount {path}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def delete_named(name: str) -> bool:
    """Delete the namespace /run/netns/``name``; True if it existed."""
    path = f"{NETNS_DIR}/{name}"
    if not os.path.exists(path):
        return False
    _remove(path)
    return True
