"""A node's own NIC lent to a topology: the two-host split's wire between the nodes.

On node-a the upstream switch adopts the node's L2 NIC as one more bridge port; on node-b the
host namespace placed there adopts it as its parent NIC (renamed to the scenario's ifname).
:func:`adopt` records the NIC (ownership kind ``uplink``) *before* moving it, and its release
renames it back, restores its MTU and moves it back to the namespace it came from. A physical
NIC whose namespace is deleted returns to the initial namespace by itself, but under the
scenario's name (or ``devN``) and not into a node namespace of the tests' netns mode: so the
return is explicit, and ``linklab clean`` does it from the record after a kill -9.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from pyroute2 import IPRoute, NetlinkError

from linklab.cmd import NETNS_DIR
from linklab.netns import entered

KIND = "uplink"
DEFAULT_HOME = "/proc/1/ns/net"   # a machine's initial namespace


class UplinkError(RuntimeError):
    """The NIC to adopt is missing or refused; names the node namespace and the NIC."""


@dataclass(frozen=True)
class Uplink:
    """Which NIC to lend and where it lives (``home``: a namespace path; None = the calling
    process's own namespace, a node's initial one on a VM)."""

    ifname: str
    home: str | None = None


def _ipr_in(path: str) -> IPRoute:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            return IPRoute()
    finally:
        os.close(fd)


def _move(src: str, ifname: str, dst: str, new_name: str, mtu: int | None,
          up: bool = True, passing: str | None = None) -> int:
    """Move ``ifname`` from namespace ``src`` to ``dst`` as ``new_name`` (down while renamed
    ``passing``, then ``up``, at ``mtu`` if given); return its index in ``dst``."""
    with _ipr_in(src) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            raise UplinkError(f"{ifname}: no such interface in {src}")
        # a name no namespace holds for the move (eth0 coming home to a node with its own
        # eth0 would be refused: EEXIST), the wanted one once there
        passing = passing or f"llup{secrets.token_hex(4)}"
        ipr.link("set", index=found[0], state="down")
        ipr.link("set", index=found[0], ifname=passing)
        fd = os.open(dst, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr.link("set", index=found[0], net_ns_fd=fd)
        finally:
            os.close(fd)
    with _ipr_in(dst) as ipr:
        index = ipr.link_lookup(ifname=passing)[0]
        ipr.link("set", index=index, ifname=new_name)
        if mtu is not None:
            ipr.link("set", index=index, mtu=mtu)
        if up:
            ipr.link("set", index=index, state="up")
        return index


def state_of(path: str, ifname: str) -> tuple[int, bool] | None:
    """(MTU, administratively up) of ``ifname`` in the namespace ``path``; None if absent."""
    with _ipr_in(path) as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return None
        link = ipr.get_links(found[0])[0]
        return link.get_attr("IFLA_MTU"), bool(link["flags"] & 1)   # IFF_UP


def adopt(run, uplink: Uplink, ns_name: str, new_name: str, mtu: int,
          where: str) -> tuple[int, Callable[[], None]]:
    """Move the node's NIC into the namespace ``ns_name`` as ``new_name``; return its index
    there and the release (rename back, old MTU, move back). ``where`` prefixes errors."""
    home = uplink.home or DEFAULT_HOME
    if uplink.home is None and not _same_ns("/proc/thread-self/ns/net", DEFAULT_HOME):
        # the record must name a home that outlives this process, for linklab clean
        raise UplinkError(f"{where}: this process is not in the initial namespace: name the "
                          f"namespace holding {uplink.ifname} (LINKLAB_PARENT_NETNS)")
    old = state_of(home, uplink.ifname)
    if old is None:
        raise UplinkError(f"{where}: uplink NIC {uplink.ifname} not found in {home} (the "
                          "node's LINKLAB_PARENT_IF; check /etc/linklab/node.env)")
    # the name it passes under is recorded too: a kill mid-move leaves it so named (a drill
    # night's agent, killed as its half was built, left node-b without its NIC)
    data = {"ns": ns_name, "ifname": new_name, "orig": uplink.ifname, "home": home,
            "mtu": old[0], "up": old[1], "passing": f"llup{secrets.token_hex(4)}"}
    ident = f"{home}:{uplink.ifname}"
    run.own_object(KIND, ident, **data)
    try:
        index = _move(home, uplink.ifname, f"{NETNS_DIR}/{ns_name}", new_name, mtu,
                      passing=data["passing"])
    except (NetlinkError, OSError, UplinkError) as exc:
        owned_remove(ident, data)
        run.disown_object(KIND, ident)
        raise UplinkError(f"{where}: cannot adopt {uplink.ifname} from {home} into "
                          f"{ns_name}: {exc}") from exc

    def release() -> None:
        owned_remove(ident, data)
        run.disown_object(KIND, ident)
    return index, release


def _same_ns(a: str, b: str) -> bool:
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# ---- ownership (linklab.ownership.OBJECT_KINDS) ------------------------------------------------

def _where(data: dict) -> tuple[str, str] | None:
    """(namespace path, name) of a lent NIC not yet home: in the topology's namespace under
    its lent name, or under its passing name there or still at home (a move cut short)."""
    path = f"{NETNS_DIR}/{data['ns']}"
    passing = data.get("passing")
    places = [(path, data["ifname"])] + ([(path, passing), (data["home"], passing)]
                                         if passing else [])
    for ns, name in places:
        if os.path.exists(ns):
            with _ipr_in(ns) as ipr:
                if ipr.link_lookup(ifname=name):
                    return ns, name
    return None


def owned_exists(ident: str, data: dict) -> bool:
    """Still lent (or half-moved): the NIC is not home under its own name."""
    return _where(data) is not None


def owned_remove(ident: str, data: dict) -> bool:
    """Give the NIC back: rename, old MTU, move home. False when it is not lent (any more)."""
    found = _where(data)
    if found is None:
        return False
    try:
        _move(found[0], found[1], data["home"], data["orig"], data.get("mtu"),
              data.get("up", True))
    except NetlinkError as exc:
        if exc.code == errno.ENODEV:   # the kernel removed it meanwhile (a veth whose peer died)
            return False
        raise
    return True
