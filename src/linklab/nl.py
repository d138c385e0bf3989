"""A lean rtnetlink request path: pyroute2's message classes encode, one plain netlink socket
per namespace sends and reads the acknowledgement.

pyroute2's high-level ``IPRoute`` calls cost ~0.3-1 ms of Python each (an asyncio loop per
call); building a topology takes ~60 of them, so the builder uses this path for writes and
keeps ``IPRoute`` for reads.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, nla
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg, ifinfveth
from pyroute2.netlink.rtnl.rtmsg import rtmsg


class ipvlan_data(nla):
    """IFLA_INFO_DATA of ipvlan, with IFLA_IPVLAN_FLAGS: pyroute2 0.9.7's own ipvlan plugin
    knows only the mode and silently drops the flags (every private/vepa child came out as
    bridge until this was registered)."""

    prefix = "IFLA_"
    nla_map = (("IFLA_IPVLAN_UNSPEC", "none"), ("IFLA_IPVLAN_MODE", "uint16"),
               ("IFLA_IPVLAN_FLAGS", "uint16"))


class netkit_data(nla):
    """IFLA_INFO_DATA of netkit (drivers/net/netkit.c, uapi if_link.h): pyroute2 0.9.7 has no
    netkit class and would drop every attribute. The peer is a nested ifinfomsg, as veth's."""

    prefix = "IFLA_"
    nla_map = (("IFLA_NETKIT_UNSPEC", "none"), ("IFLA_NETKIT_PEER_INFO", "info_peer"),
               ("IFLA_NETKIT_PRIMARY", "uint8"), ("IFLA_NETKIT_POLICY", "uint32"),
               ("IFLA_NETKIT_PEER_POLICY", "uint32"), ("IFLA_NETKIT_MODE", "uint32"))

    @staticmethod
    def info_peer(self, *argv, **kwarg):
        return ifinfveth


ifinfmsg.ifinfo.register_link_kind(module={"ipvlan": ipvlan_data, "netkit": netkit_data})

IFF_UP = 0x1
CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
NLMSG_ERROR = 2


class NetlinkError(OSError):
    """The kernel refused a request; ``errno`` is the kernel's error code."""


class Rtnl:
    """One NETLINK_ROUTE socket, bound to the namespace it was opened in."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def request(self, msg: Any, msg_type: int, flags: int = CREATE) -> None:
        self.seq += 1
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self.seq
        msg.encode()
        self.sock.send(msg.data)
        while True:
            data = self.sock.recv(65536)
            _len, kind, _flags, seq, _pid, err = struct.unpack_from("=IHHIIi", data)
            if seq == self.seq and kind == NLMSG_ERROR:
                break
        if err:
            raise NetlinkError(-err, os.strerror(-err))

    # -- links ---------------------------------------------------------------------------
    def link_add(self, ifname: str, index: int, kind: str, *, up: bool = False,
                 mtu: int | None = None, link: int | None = None, net_ns_fd: int | None = None,
                 address: str | None = None, data: list[tuple[str, Any]] | None = None,
                 peer: dict[str, Any] | None = None, peer_attr: str = "VETH_INFO_PEER") -> None:
        """RTM_NEWLINK: create ``ifname`` at ``index`` (a veth or netkit ``peer`` gets its own
        header, in ``peer_attr``)."""
        msg = ifinfmsg()
        msg["index"] = index
        if up:
            msg["flags"] = msg["change"] = IFF_UP
        attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", ifname)]
        if mtu:
            attrs.append(("IFLA_MTU", mtu))
        if link is not None:
            attrs.append(("IFLA_LINK", link))
        if net_ns_fd is not None:
            attrs.append(("IFLA_NET_NS_FD", net_ns_fd))
        if address:
            attrs.append(("IFLA_ADDRESS", address))
        data = list(data or [])
        if peer is not None:
            p_attrs: list[tuple[str, Any]] = [("IFLA_IFNAME", peer["ifname"])]
            for key, nla in (("net_ns_fd", "IFLA_NET_NS_FD"), ("mtu", "IFLA_MTU")):
                if peer.get(key) is not None:
                    p_attrs.append((nla, peer[key]))
            data.append((peer_attr, {"index": peer.get("index", 0), "attrs": p_attrs}))
        info: list[tuple[str, Any]] = [("IFLA_INFO_KIND", kind)]
        if data:
            info.append(("IFLA_INFO_DATA", {"attrs": data}))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
        msg["attrs"] = attrs
        self.request(msg, RTM_NEWLINK)

    @staticmethod
    def encoded_info_data(msg: Any) -> dict[str, Any]:
        """IFLA_INFO_DATA of an encoded RTM_NEWLINK, decoded again (to prove nothing was
        dropped by the encoder)."""
        back = ifinfmsg(msg.data)
        back.decode()
        data = back.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA")
        return {name: value for name, value in data["attrs"]} if data else {}

    def link_set(self, index: int, *, up: bool | None = None, master: int | None = None) -> None:
        msg = ifinfmsg()
        msg["index"] = index
        if up is not None:
            msg["change"] = IFF_UP
            msg["flags"] = IFF_UP if up else 0
        msg["attrs"] = [("IFLA_MASTER", master)] if master is not None else []
        self.request(msg, RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK)

    # -- addresses and routes ------------------------------------------------------------
    def addr_add(self, index: int, address: str, prefixlen: int, family: int,
                 nodad: bool = False) -> None:
        msg = ifaddrmsg()
        msg["index"] = index
        msg["family"] = socket.AF_INET6 if family == 6 else socket.AF_INET
        msg["prefixlen"] = prefixlen
        attrs: list[tuple[str, Any]] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        if nodad:
            attrs.append(("IFA_FLAGS", 0x02))  # IFA_F_NODAD
        msg["attrs"] = attrs
        self.request(msg, RTM_NEWADDR)

    def route_add(self, family: int, dst: str | None, dst_len: int, gateway: str | None = None,
                  oif: int | None = None) -> None:
        msg = rtmsg()
        msg["family"] = socket.AF_INET6 if family == 6 else socket.AF_INET
        msg["dst_len"] = dst_len
        msg["table"] = 254          # main
        msg["proto"] = 3            # boot, as `ip route add`
        msg["scope"] = 0 if gateway else 253  # universe / link
        msg["type"] = 1             # unicast
        attrs: list[tuple[str, Any]] = [("RTA_TABLE", 254)]
        if dst is not None and dst_len:
            attrs.append(("RTA_DST", dst))
        if gateway:
            attrs.append(("RTA_GATEWAY", gateway))
        if oif is not None:
            attrs.append(("RTA_OIF", oif))
        msg["attrs"] = attrs
        self.request(msg, RTM_NEWROUTE)
