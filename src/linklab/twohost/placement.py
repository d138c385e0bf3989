"""Placement: which logical hosts of a two-host scenario live on the peer node.

Data, not code: ``{"host2"}`` puts host2, its containers and everything built in them on the
peer (node-b); every other namespace (the other hosts, ``upstream``, ``remote``) stays on this
node (node-a). One machine is the empty placement. The wire between the two halves is one NIC
per node (:mod:`linklab.twohost.uplink`): node-a's joins the upstream switch, node-b's becomes the
placed host's parent NIC, so exactly one host can be placed on the peer.

A DHCP scenario is split one way only, the way the client-ID warning is about: the server's
host stays on this node and the host of the clients (the containers) goes to the peer
(:func:`dhcp_peer_hosts`), whatever ``LINKLAB_PEER_HOSTS`` says for the connectivity scenarios.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from linklab.model import Scenario

DEFAULT_PEER_HOSTS = ("host2",)


class PlacementError(ValueError):
    """A placement the scenario cannot take; names the scenario file and the host."""


@dataclass(frozen=True)
class Placement:
    """The hosts placed on the peer; :meth:`on_peer` answers for any logical namespace."""

    scenario: Scenario
    peer_hosts: frozenset[str]

    def on_peer(self, name: str) -> bool:
        """Is the logical namespace ``name`` (a host, container, upstream, remote) on the peer?"""
        if name in self.peer_hosts:
            return True
        c = next((c for c in self.scenario.containers if c.name == name), None)
        return c is not None and c.host in self.peer_hosts

    def names(self, peer: bool) -> list[str]:
        """The logical namespaces of one side, in build order."""
        sc = self.scenario
        every = ["upstream", "remote", *(h.name for h in sc.hosts),
                 *(c.name for c in sc.containers)]
        return [n for n in every if self.on_peer(n) == peer]

    @property
    def peer_host(self) -> str:
        return next(iter(self.peer_hosts))


def place(sc: Scenario, peer_hosts: Iterable[str] = DEFAULT_PEER_HOSTS) -> Placement:
    """Check that ``sc`` can be split with ``peer_hosts`` on the peer (PlacementError names the
    scenario file and the host otherwise)."""
    hosts = [h.name for h in sc.hosts]
    wanted = list(dict.fromkeys(peer_hosts))
    where = f"{sc.path}: scenario {sc.name}"
    if len(hosts) < 2:
        raise PlacementError(f"{where} has one host ({hosts[0]}): only a two-host scenario "
                             "can be split across two nodes")
    for name in wanted:
        if name not in hosts:
            raise PlacementError(f"{where}: placement names host {name!r}, which the scenario "
                                 f"does not have (its hosts: {', '.join(hosts)}; upstream, "
                                 "remote and containers follow their host)")
    if len(wanted) != 1:
        raise PlacementError(f"{where}: place exactly one host on the peer (one NIC per node "
                             f"joins the halves), got {', '.join(wanted) or 'none'}")
    if sc.dhcp is not None:
        server = sc.dhcp.server
        server_host = next((c.host for c in sc.containers if c.name == server), server)
        if server_host in wanted:
            raise PlacementError(f"{where}: the DHCP server ({server}) stays on this node and "
                                 f"its clients go to the peer: place "
                                 f"{', '.join(dhcp_peer_hosts(sc)) or 'the clients host'}, "
                                 f"not {server_host}")
    return Placement(sc, frozenset(wanted))


def dhcp_peer_hosts(sc: Scenario) -> tuple[str, ...]:
    """The host placed on the peer in a DHCP scenario: the one holding its clients."""
    return tuple(dict.fromkeys(c.host for c in sc.containers if c.host))
