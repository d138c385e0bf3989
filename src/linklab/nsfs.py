"""Where network namespaces live and how a thread enters one: the leaf that both
:mod:`linklab.cmd` (spawning inside a namespace) and :mod:`linklab.netns` (creating one) use.

A named namespace is an nsfs file bind-mounted under :data:`NETNS_DIR`, as ``ip netns add``
makes it; entering is setns(2) on the calling thread.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_void_p]


def check(ret: int, what: str) -> None:
    """Raise OSError (errno and its text) when a libc call returned non-zero."""
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open as ``fd``."""
    check(libc.setns(fd, CLONE_NEWNET), "setns")


@contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the body with this thread inside the namespace ``fd``; always come back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)
