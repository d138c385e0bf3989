"""Our own test on our own topology (scenarios/tenants.toml): a TCP service in the ``shop``
container answers the router and the WAN host, and the ``bank`` tenant cannot reach it —
macvlan private mode promises that isolation."""

import sys
import time

import pytest

from linklab.live import LiveTopology, tcp_port_open

PORT = 8080


def wait_listening(lab: LiveTopology, node: str, addr: str, timeout_s: float = 10) -> None:
    """Poll until ``addr``:PORT accepts a connection from ``node`` (the server's start-up)."""
    deadline = time.monotonic() + timeout_s
    while not tcp_port_open(lab, node, addr, PORT, timeout_s=0.2):
        if time.monotonic() > deadline:
            pytest.fail(f"no TCP service on {addr}:{PORT} after {timeout_s} s")
        time.sleep(0.05)


@pytest.mark.connectivity
@pytest.mark.parametrize("family", [4, 6])
def test_shop_service_is_reached_by_the_router_not_by_the_bank(linklab_topology,
                                                               family: int) -> None:
    lab = linklab_topology("tenants")
    shop = lab.addr("shop", family)
    server = [sys.executable, "-m", "http.server", "--bind", shop, str(PORT)]
    with lab.bkg("shop", server):
        wait_listening(lab, "upstream", shop)
        assert tcp_port_open(lab, "remote", shop, PORT), "the WAN host reaches the shop"
        assert not tcp_port_open(lab, "bank", shop, PORT, timeout_s=1.0), \
            "macvlan private: the bank tenant must not reach the shop"
        got = lab.exec("upstream", [sys.executable, "-c",
                                    "import sys, urllib.request; print(urllib.request.urlopen("
                                    "sys.argv[1], timeout=5).status)",
                                    f"http://{shop if family == 4 else f'[{shop}]'}:{PORT}/"])
        assert got.stdout.strip() == "200"


@pytest.mark.linklab_scenario("tenants")
def test_bank_cannot_even_resolve_the_shop(linklab_live: LiveTopology) -> None:
    lab = linklab_live
    assert lab.observe("neigh", "v4").result == "blocked"
    assert lab.observe("child-to-gateway", "v6").result == "pass"
    assert [str(a) for a in lab.addrs("bank", 4)] == ["198.19.42.102/24"]
