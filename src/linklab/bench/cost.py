"""Cost: what each datapath costs in guest instructions, on the instruction clock.

Under ``linklab vm --clock instructions`` (QEMU ``-icount shift=0,sleep=off``) the guest's
clock advances one nanosecond per executed guest instruction, so a fixed amount of work timed
inside the guest is an instruction count, whatever the host's load or speed. Every figure here
is a fixed amount of work (a volume, a packet count, a round-trip or connection count), timed
by the tool around its own loop, never paced by a timer (idle time is skipped on this clock).

Metrics (``METRICS``), each per unit of work:
  bulk    TCP, a fixed volume over one connection (``llcost tcp-stream``, connect to the
          receiver's byte count): instructions per byte (copy cost)
  packet  UDP, 64-byte datagrams, a fixed count, none dropped (``llcost udp-stream``)
  rr      UDP request/response round trips, 64 B (``llcost udp-rr``)
  icmp    ICMP echo round trips (``llcost icmp-rr``)
  conn    TCP connect, 1-byte request and reply, close (``llcost tcp-crr``): the metric
          netkit's published gain over veth is quoted in (connections per second)
Paths (``PATHS``): ``child`` c2 -> c1 (container to container), ``remote`` remote host -> c1
(the wire path: across the router and the parent NIC into the container).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from linklab.bench import llcost
from linklab.bench.datapaths import Datapath, open_datapath
from linklab.bench.measure import Endpoints, wait_ready
from linklab.bench.tools import ToolFailure
from linklab.build import build
from linklab.cmd import CmdError, MissingTool, bkg, cmd, require
from linklab.netns import NetNS

ICOUNT_VIRT = "tcg-icount"        # rows measured on the instruction clock (linklab.vm)
FROM_REMOTE = "from-remote"       # the flag column of remote -> container rows
PORTS = {"tcp-sink": 5301, "udp-echo": 5302, "udp-sink": 5303, "tcp-serve": 5304}
BULK_BYTES = 30 * 2**20           # tcp-stream: 30 MiB per run


@dataclass(frozen=True)
class Metric:
    """One fixed amount of work and the figure it gives (instructions per ``per``)."""

    name: str        # the bench table's metric column
    what: str        # bulk | packet | rr | icmp | conn
    tool: str
    per: str         # byte | packet | round trip | echo | connection
    count: int       # operations per run (bytes for bulk)
    warmup: int = 0  # untimed operations first (llcost --warmup)

    @property
    def unit(self) -> str:
        return f"instructions/{self.per}"


METRICS: tuple[Metric, ...] = (
    Metric("instructions_per_byte", "bulk", "llcost", "byte", BULK_BYTES),
    Metric("instructions_per_packet", "packet", "llcost", "packet", 5000, 500),
    Metric("instructions_per_round_trip", "rr", "llcost", "round trip", 2000, 200),
    Metric("instructions_per_echo", "icmp", "llcost", "echo", 2000, 200),
    Metric("instructions_per_connection", "conn", "llcost", "connection", 400, 40),
)
SMOKE_METRICS = ("rr", "conn")   # what `make test`'s cost smoke measures
PATHS = ("child", "remote")


@dataclass(frozen=True)
class Figure:
    """One run of one metric: instructions for ``count`` units of work."""

    metric: Metric
    path: str
    instructions: int
    count: int

    @property
    def value(self) -> float:
        return self.instructions / self.count


def on_instruction_clock() -> bool:
    """Whether this process runs in a guest on the instruction clock (``linklab vm --clock
    instructions`` sets LINKLAB_VIRT)."""
    return os.environ.get("LINKLAB_VIRT") == ICOUNT_VIRT


def clock_meta() -> dict[str, str]:
    """What the clock was, for meta.json: QEMU's version and the icount settings."""
    return {"clock": "instructions" if on_instruction_clock() else "wall",
            "qemu": os.environ.get("LINKLAB_VM_QEMU", ""),
            "icount": os.environ.get("LINKLAB_VM_ICOUNT", "")}


@contextmanager
def open_paths(dp: Datapath, run: object) -> Iterator[dict[str, Endpoints]]:
    """Build ``dp`` once and yield its measured paths: ``child`` (server c1, client c2) and
    ``remote`` (server c1, client the remote host behind the router; scenarios only)."""
    if dp.scenario is None:          # the references: loopback, veth pair
        with open_datapath(dp, run) as ep:   # type: ignore[arg-type]
            steady([ep.server, ep.client])
            yield {"child": ep}
        return
    with build(dp.scenario, run) as topo:   # type: ignore[arg-type]
        steady(topo.namespaces.values())
        server, addr = topo.ns("c1"), str(topo.addr("c1", 4))
        paths = {"child": Endpoints(server, topo.ns("c2"), addr),
                 "remote": Endpoints(server, topo.ns("remote"), addr)}
        yield paths


NEIGH_REACHABLE_MS = 3_600_000   # an hour of guest time: longer than any cost run


def steady(namespaces: Iterable[NetNS]) -> None:
    """Make one repetition start from the state the previous one started from, in every
    namespace of the datapath:

    - every resolved neighbour stays REACHABLE for the run: nothing confirms a UDP or ICMP
      peer, so its entry went STALE after ~30 s of guest time and cost a DELAY/PROBE cycle
      (an ARP exchange) in whichever repetition it fell (+0.7 % on remote round trips);
    - TCP keeps no per-destination metrics (``tcp_no_metrics_save``): each connection would
      otherwise start from the cwnd, ssthresh and RTT the previous one left, and the bulk
      figure drifted from one repetition to the next (+1.8 % over three).
    """
    for ns in namespaces:
        with ns.enter():
            for knob in Path("/proc/sys/net/ipv4/neigh").glob("*/base_reachable_time_ms"):
                knob.write_text(str(NEIGH_REACHABLE_MS))
            Path("/proc/sys/net/ipv4/tcp_no_metrics_save").write_text("1")


@contextmanager
def servers(ep: Endpoints, run: object) -> Iterator[None]:
    """The llcost servers listening on c1's address for a whole datapath."""
    binary = str(llcost.binary(run))
    with ExitStack() as stack:
        for what, port in PORTS.items():
            argv = [binary, what, ep.server_addr, port]
            log = stack.enter_context(tempfile.TemporaryFile())
            proc = stack.enter_context(bkg(argv, ns=ep.server, owner=run, stdout=log,
                                           stderr=log, grace=0.5))
            wait_ready(ep.server, port, "udp" if what.startswith("udp") else "tcp",
                       proc, log, what)
        yield


def client_argv(metric: Metric, ep: Endpoints, binary: str) -> list[object]:
    """The client command of one run of ``metric`` against ``ep``'s server."""
    addr = ep.server_addr
    warm = ["--warmup", metric.warmup] if metric.warmup else []
    return {"bulk": [binary, "tcp-stream", addr, PORTS["tcp-sink"], metric.count],
            "packet": [binary, "udp-stream", addr, PORTS["udp-sink"], metric.count, 64],
            "rr": [binary, "udp-rr", addr, PORTS["udp-echo"], metric.count, 64],
            "icmp": [binary, "icmp-rr", addr, metric.count],
            "conn": [binary, "tcp-crr", addr, PORTS["tcp-serve"], metric.count],
            }[metric.what] + warm


def measure(metric: Metric, path: str, ep: Endpoints, binary: str) -> Figure:
    """One run; raises ToolFailure (the tool's words) when it did not measure."""
    argv = client_argv(metric, ep, binary)
    try:
        res = cmd(argv, ns=ep.client, timeout=600, check=False)
    except (CmdError, MissingTool) as exc:
        raise ToolFailure(str(exc)) from None
    if res.returncode != 0:
        raise ToolFailure(f"llcost {metric.what}: exit {res.returncode}: "
                          f"{(res.stderr or res.stdout).strip()[:300]}")
    op = llcost.parse(res.stdout)
    if metric.what == "bulk":    # a slice of one TCP stream varies more than the whole does
        return Figure(metric, path, op.ns, op.bytes)
    # the median slice's (a burst of unrelated guest work lands in one slice)
    return Figure(metric, path, op.median_ns, op.count)


Sink = Callable[[Figure | None, Metric, str, int, str | None], None]


def measure_datapath(dp: Datapath, run: object, *, reps: int, warmup: int,
                     metrics: tuple[Metric, ...] = METRICS, sink: Sink) -> list[str]:
    """Every metric on every path of ``dp``: ``warmup`` discarded repetitions, then ``reps``,
    each repetition one run of every metric in turn; each figure (or failure) goes to
    ``sink(figure, metric, path, repetition, error)``. Returns the error texts."""
    errors: list[str] = []
    binary = str(llcost.binary(run))
    with open_paths(dp, run) as paths:
        for path, ep in paths.items():
            with servers(ep, run):
                for rep in range(1 - warmup, reps + 1):
                    for metric in metrics:
                        try:
                            fig: Figure | None = measure(metric, path, ep, binary)
                            err = None
                        except ToolFailure as exc:
                            fig, err = None, str(exc)
                            errors.append(f"{dp.name} {path} {metric.what}: {err}")
                        if rep >= 1:
                            sink(fig, metric, path, rep, err)
    return errors


def row(dp: Datapath, metric: Metric, path: str, rep: int, fig: Figure | None,
        error: str | None, kernel: str, virt: str) -> dict[str, object]:
    """The bench table row of one cost figure (or of its failure)."""
    flag = "+".join(p for p in (dp.flag, FROM_REMOTE if path == "remote" else "") if p)
    return {"datapath": dp.kind, "mode": dp.mode, "flag": flag, "family": "v4",
            "direction": metric.what, "streams": 1, "metric": metric.name,
            "value": fig.value if fig else None, "unit": metric.unit, "repetition": rep,
            "tool": metric.tool, "error": error, "kernel": kernel, "virt": virt}


def spread_pct(values: list[float]) -> float:
    """(max - min) / min of a figure's repetitions, in percent."""
    return (max(values) - min(values)) / min(values) * 100.0


# ---- power: a known extra cost, injected -----------------------------------------------------

POWER_TABLE = "linklab_power"
POWER_METRIC = "rr"              # what the power experiment measures (udp-rr, veth pair)


def power_ruleset(rules: int) -> str:
    """An nft table on the input hook with ``rules`` rules no packet matches (each is
    evaluated for every packet entering the namespace: a known, small cost per packet)."""
    body = "".join(f"    udp dport {40000 + i} drop\n" for i in range(rules))
    return (f"table inet {POWER_TABLE} {{\n  chain input {{\n"
            f"    type filter hook input priority 0; policy accept;\n{body}  }}\n}}\n")


@contextmanager
def injected(ns: object, rules: int) -> Iterator[None]:
    """``rules`` non-matching nft rules on the input hook of ``ns`` while inside; the table
    is deleted on exit (and dies with the namespace, which the run owns, if this dies)."""
    if rules <= 0:
        yield
        return
    nft = require("nft", "nftables")
    cmd([nft, "-f", "-"], ns=ns, input=power_ruleset(rules), timeout=60)   # type: ignore[arg-type]
    try:
        yield
    finally:
        cmd([nft, "delete", "table", "inet", POWER_TABLE], ns=ns, timeout=60)  # type: ignore[arg-type]


def power_pools(dp: Datapath, run: object, pool: int, rules: int
                ) -> tuple[list[float], list[float]]:
    """``pool`` repetitions of the rr metric on ``dp``'s c2 -> c1 path as it is (A) and as
    many with ``rules`` rules injected on c1's input hook (B), alternating A and B after one
    warm-up of each, so a drift hits both alike."""
    metric = next(m for m in METRICS if m.what == POWER_METRIC)
    binary = str(llcost.binary(run))
    a: list[float] = []
    b: list[float] = []
    with open_paths(dp, run) as paths:
        ep = paths["child"]
        with servers(ep, run):
            for i in range(-1, pool):
                for side, n in ((a, 0), (b, rules)):
                    with injected(ep.server, n):
                        fig = measure(metric, "child", ep, binary)
                    if i >= 0:
                        side.append(fig.value)
    return a, b
