"""Settings the whole suite shares, each defined once: its address ranges, the time scale of
its waits and the run id of its results. Standard library only (a leaf every layer imports)."""

from __future__ import annotations

import ipaddress
import os
import time

# the suite's address ranges (RFC 2544 benchmarking, RFC 3849 documentation): every address
# a scenario, an uplink or a remote node uses lies inside them, nothing on the host's own LAN
SUITE_V4 = ipaddress.IPv4Network("198.18.0.0/15")
SUITE_V6 = ipaddress.IPv6Network("2001:db8::/32")
SUITE_RANGES: tuple[ipaddress.IPv4Network, ipaddress.IPv6Network] = (SUITE_V4, SUITE_V6)
SUITE_RANGES_TEXT = f"{SUITE_V4} and {SUITE_V6}"

TIME_SCALE_ENV = "LINKLAB_TIME_SCALE"   # stretches every wait (the VM leg sets it)
RUN_ID_ENV = "LINKLAB_RUN_ID"           # the results run id, inherited by workers and guests


def in_suite(addr: ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network
             | ipaddress.IPv6Network) -> bool:
    """Whether an address or a network lies inside the suite's range of its family."""
    net = ipaddress.ip_network(addr)
    return any(net.version == r.version and net.subnet_of(r)  # type: ignore[arg-type]
               for r in SUITE_RANGES)


def time_scale() -> float:
    """``LINKLAB_TIME_SCALE`` as a number (1 when unset): the factor every wait is stretched by."""
    return float(os.environ.get(TIME_SCALE_ENV, "1"))


def new_run_id(marker: str) -> str:
    """A fresh run id: the UTC start time, then ``marker`` (``20261206T112218Z-3f2a``)."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + f"-{marker}"


def current_run_id() -> str | None:
    """This process's run id (``LINKLAB_RUN_ID``), or None before one is chosen."""
    return os.environ.get(RUN_ID_ENV) or None
