"""The lean netlink path encodes every attribute the kinds ask for (pyroute2 drops names its
message classes do not know, silently)."""

from __future__ import annotations

import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from linklab.kinds import ipvlan, macvlan
from linklab.nl import Rtnl


def encode(kind: str, data: list) -> dict:
    msg = ifinfmsg()
    msg["attrs"] = [("IFLA_IFNAME", "x"), ("IFLA_LINKINFO", {"attrs": [
        ("IFLA_INFO_KIND", kind), ("IFLA_INFO_DATA", {"attrs": data})]})]
    msg.encode()
    return Rtnl.encoded_info_data(msg)


@pytest.mark.parametrize("mode", ipvlan.MODES)
@pytest.mark.parametrize("flag", ipvlan.FLAGS)
def test_ipvlan_mode_and_flags_reach_the_wire(mode: str, flag: str) -> None:
    got = encode("ipvlan", ipvlan.link_data(mode, flag))
    assert got == {"IFLA_IPVLAN_MODE": ipvlan.MODE_VALUE[mode],
                   "IFLA_IPVLAN_FLAGS": ipvlan.FLAG_VALUE[flag]}


@pytest.mark.parametrize("mode", macvlan.MODES)
def test_macvlan_mode_reaches_the_wire(mode: str) -> None:
    # pyroute2 decodes the mode number back to its name
    assert encode("macvlan", macvlan.link_data(mode)) == {"IFLA_MACVLAN_MODE": mode}


def test_bridge_ageing_time_reaches_the_wire() -> None:
    assert encode("bridge", [("IFLA_BR_AGEING_TIME", 0)]) == {"IFLA_BR_AGEING_TIME": 0}
