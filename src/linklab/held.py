"""What an interface holds: its addresses as the kernel reports them, with the states that keep
one from being used.

A new IPv6 address added without ``IFA_F_NODAD`` is *tentative* until duplicate address
detection has run. The kernel ends it in a work item of its own (``addrconf_dad_work``, which
waits for the RTNL lock), even where DAD is off (``accept_dad`` 0, a NOARP link): until then
``bind()`` to the address fails with EADDRNOTAVAIL. linklab adds its own IPv6 addresses with
``nodad``; a CNI plugin adds them without.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
# ifaddrmsg flags that make an address unusable, with the word `ip addr` prints for each
STATES = ((IFA_F_TENTATIVE, "tentative"), (IFA_F_DADFAILED, "dadfailed"))


@dataclass(frozen=True)
class Held:
    """One address on an interface."""

    address: str                   # ADDR/PREFIXLEN
    states: tuple[str, ...] = ()   # why it cannot be used yet: tentative, dadfailed

    def __str__(self) -> str:
        return " ".join((self.address, *self.states))


def held(ns: Any, index: int) -> list[Held]:
    """The addresses on interface ``index`` of the namespace ``ns`` (a
    :class:`~linklab.netns.NetNS`: read through its ``ipr``), both families."""
    out = []
    for a in ns.ipr.get_addr(index=index):
        flags = a.get_attr("IFA_FLAGS") or a["flags"]   # IFA_FLAGS: all 32 bits
        out.append(Held(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}",
                        tuple(word for bit, word in STATES if flags & bit)))
    return out


def unusable(ns: Any, index: int) -> list[Held]:
    """The addresses on interface ``index`` that a socket cannot bind yet."""
    return [h for h in held(ns, index) if h.states]
