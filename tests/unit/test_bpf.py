"""The eBPF datapaths without a kernel: netkit's attributes as they go on the wire and the
map keys the programs look up."""

from __future__ import annotations

import ipaddress

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from linklab import bpf
from linklab.kinds import netkit
from linklab.nl import Rtnl


@pytest.mark.parametrize("mode", netkit.MODES)
def test_netkit_attributes_reach_the_wire(mode: str) -> None:
    peer = {"index": 42, "attrs": [("IFLA_IFNAME", "eth0"), ("IFLA_MTU", 1400)]}
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", "nk0"), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", "netkit"), ("IFLA_INFO_DATA", {"attrs": netkit.link_data(mode, peer)})
    ]})]
    msg.encode()
    got = Rtnl.encoded_info_data(msg)
    peer_back = got.pop("IFLA_NETKIT_PEER_INFO")
    assert got == {"IFLA_NETKIT_MODE": netkit.MODE_VALUE[mode], "IFLA_NETKIT_POLICY": 0,
                   "IFLA_NETKIT_PEER_POLICY": 0}
    assert peer_back["index"] == 42
    assert peer_back.get_attr("IFLA_IFNAME") == "eth0"
    assert peer_back.get_attr("IFLA_MTU") == 1400
    assert netkit.MODE_VALUE == {"l2": 0, "l3": 1}   # enum netkit_mode (uapi if_link.h)


def test_map_keys_map_ipv4_into_ipv6() -> None:
    assert bpf.addr_key(ipaddress.ip_address("198.18.10.2")).hex() == \
        "00000000000000000000ffffc6120a02"
    assert bpf.addr_key(ipaddress.ip_address("2001:db8::1")) == \
        ipaddress.ip_address("2001:db8::1").packed
