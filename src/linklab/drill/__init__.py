"""The reliability and safety drill (``make drill``, ``python -m linklab.drill``).

Kills real linklab runs (kill -9 and Ctrl-C) while their topologies, servers and iperf3/sockperf
are alive, checks that the next run or ``linklab clean`` removes what they owned and nothing
else (decoys survive), injects tool failures, runs concurrent sessions, feeds bad input, and
around all of it compares the default namespace byte for byte and captures the uplink for
suite traffic. Every figure lands in the printed summary table (and ``--json``).

What a dead run "owned" is *observed* independently of its ownership record, while it is
alive: namespaces ``ll<marker>-*`` of the markers in the drill's private record directory,
processes descended from the pytest process or living in those namespaces, and temp dirs
``/tmp/linklab-<marker>-*``. The cleaners under test only read the records.
"""

from __future__ import annotations

import sys
from pathlib import Path

from linklab.nsfs import NETNS_DIR
from linklab.suite import SUITE_V4, SUITE_V6

ROOT = Path(__file__).resolve().parents[3]
PY = sys.executable
NETNS = NETNS_DIR
UPLINK_FILTER = f"net {SUITE_V4} or net {SUITE_V6} or udp port 67 or udp port 68"
SYSCTLS = ["net/ipv4/ip_forward", "net/ipv4/conf/all/forwarding",
           "net/ipv6/conf/all/forwarding", "net/ipv6/conf/default/forwarding",
           "net/ipv4/ping_group_range", "net/ipv6/conf/all/accept_dad",
           "net/ipv6/conf/default/accept_dad", "net/ipv6/conf/all/accept_ra",
           "net/ipv6/conf/default/accept_ra"]
DHCP_COMMS = {"kea-dhcp4", "dnsmasq"}


