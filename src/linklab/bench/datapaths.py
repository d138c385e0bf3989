"""The datapaths a benchmark run measures: two references and every scenario whose datapath
forwards between its two containers (c1 = server, c2 = client).

References, measured in the same run:
  ``loopback``  server and client in ONE namespace over ``lo`` (no datapath at all: the
                ceiling of this machine; efficiency = datapath / loopback),
  ``veth-pair`` a plain veth pair between two namespaces, at the scenarios' MTU.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from linklab import kinds
from linklab.bench.measure import Endpoints
from linklab.model import Scenario, load_paths
from linklab.netns import NetNS
from linklab.ownership import Run

REF_MTU = 1400                   # the scenarios' MTU, so veth-pair compares with them
LOOP_ADDR = "198.18.254.1"       # on lo of the loopback namespace
LOOP_ADDR6 = "2001:db8:fe::1"
PAIR_ADDRS = ("198.18.254.1", "198.18.254.2")   # server, client of veth-pair
PAIR_ADDRS6 = ("2001:db8:fe::1", "2001:db8:fe::2")


@dataclass(frozen=True)
class Datapath:
    """One measured datapath. ``name`` is the test id; kind/mode/flag go to the table."""

    name: str
    kind: str
    mode: str = ""
    flag: str = ""
    scenario: Scenario | None = None
    path: str = "child"          # child: c1 <- c2; remote: remote host <- c1 (see REMOTE_FLAG)

    @property
    def reference(self) -> bool:
        return self.scenario is None


LOOPBACK = Datapath("loopback", "loopback")
VETH_PAIR = Datapath("veth-pair", "veth-pair")


def forwards_between_children(sc: Scenario) -> bool:
    """A single-host scenario that expects c1 <-> c2 to pass over IPv4 (macvlan private,
    vepa without hairpin, passthru and the ipvlan modes that isolate children are left out;
    two-host scenarios measure a simulated wire, not one datapath)."""
    names = {c.name for c in sc.containers}
    exp = sc.expect.get("child-to-child")
    single = len(getattr(sc, "hosts", (None,))) == 1
    return single and {"c1", "c2"} <= names and exp is not None and \
        exp.results.get("v4") == "pass"


def datapaths(paths: Path | str | Iterable[Path | str]) -> list[Datapath]:
    """The references, then every forwarding scenario of ``paths`` (directories or files,
    as ``--scenarios`` gives them; data-driven from the expectations). Kinds whose links a
    foreign program makes (CNI plugins) are left out: their links are their native twins'."""
    out = [LOOPBACK, VETH_PAIR]
    for sc in load_paths([paths] if isinstance(paths, (str, Path)) else paths):
        if forwards_between_children(sc) and not kinds.foreign(sc.kind):
            flag = sc.flag or ("hairpin" if sc.hairpin else "")
            out.append(Datapath(sc.name, sc.kind, sc.mode or "", flag, sc))
    return out


# veth-bpf measured beside the datapaths it replaces (pytest -m bench -k bpf): their
# container <-> container figures, and container <-> remote host for all four
BPF_BESIDE = ("veth", "bridge", "macvlan-bridge")
BPF_REMOTE = ("veth", "bridge", "macvlan-bridge", "veth-bpf")
REMOTE_FLAG = "to-remote"        # the flag column of container <-> remote rows


def by_name(scenario_dir: Path | str, names: tuple[str, ...],
            path: str = "child") -> list[Datapath]:
    """The datapaths of the named scenarios; ``path="remote"``: the remote host (server) <-
    c1 (client) across the parent NIC and the router, flagged :data:`REMOTE_FLAG`."""
    found = {d.name: d for d in datapaths(scenario_dir)}
    out = []
    for n in names:
        if n not in found:
            raise KeyError(f"{scenario_dir}: no forwarding scenario {n!r}")
        d = found[n]
        if path == "remote":
            d = Datapath(f"{n}-remote", d.kind, d.mode, "+".join(
                p for p in (d.flag, REMOTE_FLAG) if p), d.scenario, "remote")
        out.append(d)
    return out


def missing(dp: Datapath) -> str | None:
    """Why this kernel cannot build ``dp`` (e.g. ``kernel lacks ipvlan (CONFIG_IPVLAN)``)."""
    if dp.scenario is None:
        return None
    from linklab.capabilities import missing_link

    return missing_link(dp.scenario.kind, dp.scenario.mode, dp.scenario.flag)


def _namespace(stack: ExitStack, run: Run, logical: str) -> NetNS:
    name = run.ns_name(logical)
    run.own_namespace(name)
    ns = NetNS(name)

    def release() -> None:
        ns.close()
        run.disown_namespace(name)

    stack.callback(release)
    ns.ipr.link("set", index=1, state="up")
    return ns


@contextmanager
def open_datapath(dp: Datapath, run: Run) -> Iterator[Endpoints]:
    """Build ``dp`` (its namespaces owned by ``run``) and yield its endpoints; delete it all
    on exit."""
    if dp.scenario is not None:
        from linklab.build import build

        with build(dp.scenario, run) as topo:
            if dp.path == "remote":
                server, client = "remote", "c1"
            else:
                server, client = "c1", "c2"
            try:
                addr6 = str(topo.addr(server, 6)) if topo.node(client).addr(6) else ""
            except KeyError:     # a v4-only scenario (the seed recipes)
                addr6 = ""
            yield Endpoints(topo.ns(server), topo.ns(client), str(topo.addr(server, 4)),
                            {"server": topo.ifname(server), "client": topo.ifname(client)},
                            addr6)
        return
    with ExitStack() as stack:
        if dp is LOOPBACK or dp.name == LOOPBACK.name:
            ns = _namespace(stack, run, "bn-loop")
            ns.ipr.addr("add", index=1, address=LOOP_ADDR, prefixlen=32)
            ns.nl.addr_add(1, LOOP_ADDR6, 128, 6, nodad=True)
            yield Endpoints(ns, ns, LOOP_ADDR, {"server": "lo", "client": "lo"}, LOOP_ADDR6)
            return
        srv = _namespace(stack, run, "bn-pair-s")
        cli = _namespace(stack, run, "bn-pair-c")
        srv.ipr.link("add", ifname="eth0", kind="veth", mtu=REF_MTU,
                     peer={"ifname": "eth0", "net_ns_fd": cli.fd, "mtu": REF_MTU})
        for ns, addr, addr6 in zip((srv, cli), PAIR_ADDRS, PAIR_ADDRS6):
            index = ns.ipr.link_lookup(ifname="eth0")[0]
            ns.ipr.link("set", index=index, state="up")
            ns.ipr.addr("add", index=index, address=addr, prefixlen=24)
            ns.nl.addr_add(index, addr6, 64, 6, nodad=True)
        yield Endpoints(srv, cli, PAIR_ADDRS[0], {"server": "eth0", "client": "eth0"},
                        PAIR_ADDRS6[0])
