"""Addresses a socket cannot bind yet, without a kernel: a CNI plug returns only once the
kernel lets the container use every address the plugin added (an IPv6 address stays tentative
until the kernel's DAD work has run, and the batch's first probe binds it at once); a probe
that cannot bind anyway is its cell's error observation, naming the namespace, the interface
and what it holds, and the rest of the batch goes on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import SimpleNamespace
from typing import Any

import pytest

from linklab import cni, probes
from linklab.checks import cells
from linklab.held import IFA_F_DADFAILED, IFA_F_TENTATIVE, Held, held, unusable
from linklab.kinds import cni as cni_kind
from linklab.model import SHIPPED, load_scenario
from linklab.probes import Observation, observe_batch

SC = load_scenario(SHIPPED / "cni-ipvlan-l3.toml")
C1 = SC.containers[0]
V4, V6 = (str(a) for a in C1.addrs)        # 198.18.1.10/24, 2001:db8:0:11::10/64


class FakeAddr(dict):
    """An ifaddrmsg as pyroute2 returns it: fields by key, attributes by get_attr."""

    def __init__(self, cidr: str, flags: int, long_flags: bool = True) -> None:
        address, prefixlen = cidr.split("/")
        super().__init__(prefixlen=int(prefixlen), flags=flags & 0xFF)
        self.attrs = {"IFA_ADDRESS": address, "IFA_FLAGS": flags if long_flags else None}

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


class FakeIpr:
    """c1's namespace after the plugin's ADD: eth0 (index 2) holds both addresses, the IPv6
    one tentative for the first ``tentative_reads`` reads (the kernel's DAD work not run)."""

    def __init__(self, tentative_reads: int) -> None:
        self.tentative_reads = tentative_reads
        self.reads = 0

    def link_lookup(self, ifname: str) -> list[int]:
        return [2] if ifname == C1.ifname else []

    def get_addr(self, index: int) -> list[FakeAddr]:
        assert index == 2
        self.reads += 1
        v6 = IFA_F_TENTATIVE if self.reads <= self.tentative_reads else 0
        return [FakeAddr(V4, 0x80), FakeAddr(V6, 0x80 | v6)]


def fake_topo(ipr: FakeIpr) -> Any:
    spaces = {name: SimpleNamespace(path=f"/run/netns/llfake-{name}", ipr=ipr)
              for name in ("host", "c1", "c2")}
    registered: dict[tuple[str, str], int] = {}
    return SimpleNamespace(scenario=SC, run=SimpleNamespace(marker="fake"), kind_state={},
                           stack=ExitStack(), ns=spaces.__getitem__, registered=registered,
                           register=lambda ns, ifname, index: registered.update(
                               {(ns, ifname): index}))


@pytest.fixture
def plugin_added_both(monkeypatch: pytest.MonkeyPatch) -> None:
    """Function scope; monkeypatch. The plugin's ADD (and CHECK) succeed at once, reporting
    c1's declared addresses on eth0; nothing runs."""
    @contextmanager
    def attached(netconf: Any, at: cni.Attachment, **_kw: Any) -> Iterator[dict]:
        yield {"interfaces": [{"name": at.ifname, "sandbox": at.netns}],
               "ips": [{"address": V4, "interface": 0}, {"address": V6, "interface": 0}]}

    monkeypatch.setattr(cni, "attached", attached)


def test_plug_returns_once_every_address_is_usable(plugin_added_both) -> None:
    """The plugin returned with c1's IPv6 address still tentative: plug waits until the kernel
    has cleared it, so the first probe can bind it (the VM leg's EADDRNOTAVAIL)."""
    ipr = FakeIpr(tentative_reads=3)
    topo = fake_topo(ipr)
    cni_kind.plug(topo, C1, SC.hosts[0])
    assert unusable(topo.ns("c1"), 2) == [], "plug returned while an address was tentative"
    assert ipr.reads > 3
    assert topo.registered == {("c1", "eth0"): 2}


def test_plug_names_an_address_that_stays_tentative(plugin_added_both,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An address the kernel never clears fails the ADD, naming the container, interface,
    address and its state."""
    monkeypatch.setattr(cni_kind, "SETTLE_S", 0.1)
    topo = fake_topo(FakeIpr(tentative_reads=10**6))
    with pytest.raises(cni.CniError) as err:
        cni_kind.plug(topo, C1, SC.hosts[0])
    assert (err.value.plugin, err.value.command) == ("ipvlan", "ADD")
    assert f"c1/eth0 still holds {V6} tentative 0.1 s after the plugin returned" in str(err.value)
    assert topo.registered == {}


def test_held_reads_the_states_from_either_flags_field() -> None:
    """IFA_FLAGS (32 bits) when the kernel sends it, else the ifaddrmsg's 8-bit flags."""
    class Ns:
        ipr = SimpleNamespace(get_addr=lambda index: [
            FakeAddr(V4, 0x80), FakeAddr(V6, IFA_F_TENTATIVE | IFA_F_DADFAILED),
            FakeAddr("fe80::1/64", IFA_F_TENTATIVE, long_flags=False)])

    assert held(Ns, 2) == [Held(V4), Held(V6, ("tentative", "dadfailed")),
                           Held("fe80::1/64", ("tentative",))]
    assert [str(h) for h in unusable(Ns, 2)] == [f"{V6} tentative dadfailed",
                                                  "fe80::1/64 tentative"]


# ---- a probe whose bind fails ----------------------------------------------------------------

class UnbindableSocket:
    """A socket whose bind() fails as the kernel's does for an address it holds tentative."""

    def __init__(self, *_a: Any) -> None:
        self.closed = False

    def setblocking(self, _flag: bool) -> None: ...

    def setsockopt(self, *_a: Any) -> None: ...

    def bind(self, address: tuple) -> None:
        raise OSError(99, "Cannot assign requested address")

    def close(self) -> None:
        self.closed = True


def probing_topo(ipr: FakeIpr) -> Any:
    """The cni-ipvlan-l3 topology as the probes see it: namespaces entered by no-ops."""
    @contextmanager
    def enter() -> Iterator[None]:
        yield

    spaces = {name: SimpleNamespace(name=f"llfake-{name}", ipr=ipr, enter=enter)
              for name in ("host", "c1", "c2", "upstream", "remote")}
    return SimpleNamespace(scenario=SC, peer=None, ns=spaces.__getitem__,
                           here=lambda _name: True, ifname=lambda n: SC.node(n).ifname,
                           addr=lambda n, fam: SC.node(n).addr(fam).ip)


def test_a_failed_bind_is_the_cells_error_not_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The VM leg's traceback (OSError: [Errno 99] out of the batch, in whichever cell asked
    first) becomes each cell's EADDRNOTAVAIL, saying where and what the interface holds."""
    made: list[UnbindableSocket] = []
    monkeypatch.setattr(probes.socket, "socket",
                        lambda *a: made.append(UnbindableSocket()) or made[-1])
    topo = probing_topo(FakeIpr(tentative_reads=10**6))
    wanted = [c for c in cells(SC) if c.check == "child-to-child"]
    seen = observe_batch(topo, wanted)
    assert set(seen) == {"cni-ipvlan-l3-v4-child-to-child", "cni-ipvlan-l3-v6-child-to-child"}
    v6 = seen["cni-ipvlan-l3-v6-child-to-child"]
    assert v6 == Observation(
        "EADDRNOTAVAIL", "c1 -> c2 2001:db8:0:12::10: bind 2001:db8:0:11::10 failed (Cannot "
        f"assign requested address); llfake-c1/eth0 holds {V4}, {V6} tentative")
    assert seen["cni-ipvlan-l3-v4-child-to-child"].result == "EADDRNOTAVAIL"
    assert made and all(s.closed for s in made)


def test_a_missing_interface_is_said(monkeypatch: pytest.MonkeyPatch) -> None:
    """The source's interface gone (a DEL, a failed ADD): the detail says so."""
    monkeypatch.setattr(probes.socket, "socket", UnbindableSocket)
    ipr = FakeIpr(tentative_reads=0)
    ipr.link_lookup = lambda ifname: []
    topo = probing_topo(ipr)
    cell = next(c for c in cells(SC) if c.check == "child-to-host" and c.family == "v4")
    seen = observe_batch(topo, [cell])[cell.id]
    assert seen.result == "EADDRNOTAVAIL"
    assert seen.detail.endswith("; llfake-c1/eth0 does not exist"), seen.detail


def test_a_probe_that_cannot_open_leaves_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any other error opening one probe (here the source's socket() itself) is that cell's
    observation; the other cells of the batch are still observed."""
    monkeypatch.setattr(probes.socket, "socket", UnbindableSocket)
    real = probes.Ping.__init__

    def ping(self, topo, src, dst, family, **kw):
        if family == 6:
            raise PermissionError(13, "Permission denied")
        real(self, topo, src, dst, family, **kw)

    monkeypatch.setattr(probes.Ping, "__init__", ping)
    topo = probing_topo(FakeIpr(tentative_reads=0))
    wanted = [c for c in cells(SC) if c.check == "child-to-child"]
    seen = observe_batch(topo, wanted)
    assert seen["cni-ipvlan-l3-v6-child-to-child"] == Observation(
        "EACCES", "cni-ipvlan-l3-v6-child-to-child: its probe could not be opened: [Errno 13] "
                  "Permission denied")
    assert seen["cni-ipvlan-l3-v4-child-to-child"].result == "EADDRNOTAVAIL"
