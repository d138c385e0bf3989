"""Measure: one tool run between two live namespaces, turned into numbers.

Each measurement starts its own server inside the server namespace (``bkg``, owned by the
run, stopped by PID), polls until the port is bound there, runs the client inside the client
namespace and parses its output. A tool that fails yields an :class:`Outcome` with ``error``
set (the tool's words plus the server's stderr); it never raises for a tool failure.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace

from linklab.bench.tools import (
    IperfResult,
    ToolFailure,
    parse_iperf3,
    parse_ping,
    parse_sockperf,
)
from linklab.cmd import CmdError, MissingTool, bkg, cmd
from linklab.netns import NetNS

LATENCY_PCTS = (50.0, 90.0, 99.0, 99.9)
READY_TIMEOUT_S = 5.0
SOCKPERF_GRACE_S = 0.2   # sockperf's server lingers ~2 s after SIGTERM; it holds no state


@dataclass(frozen=True)
class Params:
    """How long and how hard each measurement runs."""

    duration_s: int = 2          # iperf3 -t (whole seconds: iperf3 3.12 truncates fractions)
    omit_s: float = 0.5          # warm-up: receiver intervals starting earlier are dropped
    interval_s: float = 0.25     # iperf3 -i on client and server (slicing resolution)
    udp_rate: str = "1G"         # iperf3 -u -b: fixed offered rate
    latency_s: int = 1           # sockperf ping-pong -t

    def check(self) -> None:
        if self.duration_s < 1 or self.latency_s < 1:
            raise ValueError("durations must be at least 1 s")
        if not 0 <= self.omit_s < self.duration_s:
            raise ValueError(f"warm-up {self.omit_s:g} s must be shorter than the "
                             f"{self.duration_s} s duration")
        if self.interval_s <= 0:
            raise ValueError("interval must be positive")


@dataclass(frozen=True)
class Spec:
    """One kind of measurement of the matrix."""

    name: str        # readable id: tcp-forward-x1, udp-forward-x1, pingpong-tcp(-v6)
    tool: str        # iperf3 | sockperf
    proto: str       # tcp | udp
    direction: str   # forward (client c2 -> server c1) | reverse (-R) | pingpong
    streams: int = 1
    family: str = "v4"   # v4 | v6: which address of the server is used

    @property
    def primary(self) -> str:
        """The metric an error row is filed under."""
        if self.tool == "sockperf":
            return f"{self.proto}_oneway_latency_p50_us"
        if self.tool == "ping":
            return "icmp_rtt_latency_p50_us"
        return "throughput_bps" if self.proto == "tcp" else "udp_loss_pct"


MATRIX_V4: tuple[Spec, ...] = (
    Spec("tcp-forward-x1", "iperf3", "tcp", "forward", 1),
    Spec("tcp-reverse-x1", "iperf3", "tcp", "reverse", 1),
    Spec("tcp-forward-x4", "iperf3", "tcp", "forward", 4),
    Spec("tcp-reverse-x4", "iperf3", "tcp", "reverse", 4),
    Spec("udp-forward-x1", "iperf3", "udp", "forward", 1),
    Spec("pingpong-tcp", "sockperf", "tcp", "pingpong", 1),
    Spec("pingpong-udp", "sockperf", "udp", "pingpong", 1),
    Spec("pingpong-icmp", "ping", "icmp", "pingpong", 1),
)
# the same measurements over IPv6 (the matrix is dual-stack); names end in -v6. sockperf
# 3.7 (Debian 12) rejects IPv6 addresses ("-i Invalid address"), so v6 latency is the ICMP
# echo round trip, measured for v4 as well so the two families compare like with like.
MATRIX_V6: tuple[Spec, ...] = tuple(replace(x, name=f"{x.name}-v6", family="v6")
                                    for x in MATRIX_V4 if x.tool != "sockperf")
MATRIX: tuple[Spec, ...] = MATRIX_V4 + MATRIX_V6


@dataclass(frozen=True)
class Endpoints:
    """Where a datapath is measured: server (c1) and client (c2) namespaces, the server's
    address; for the loopback reference both namespaces are the same."""

    server: NetNS
    client: NetNS
    server_addr: str
    ifnames: dict[str, str] = field(default_factory=dict)   # role -> interface measured
    server_addr6: str = ""                                  # "" when the datapath has no v6

    def addr(self, family: str) -> str:
        """The server's address of ``family`` (v4 | v6); ToolFailure when it has none."""
        addr = self.server_addr6 if family == "v6" else self.server_addr
        if not addr:
            raise ToolFailure(f"the server has no {family} address on this datapath")
        return addr


@dataclass(frozen=True)
class Layout:
    """Where the two ends run: server and client pinned to distinct CPUs (iperf3 -A,
    taskset for sockperf), or unpinned (None) on a single-CPU machine."""

    server_cpu: int | None
    client_cpu: int | None

    @classmethod
    def choose(cls) -> Layout:
        """The first two CPUs this process may run on; unpinned with fewer than two."""
        cpus = sorted(os.sched_getaffinity(0))
        return cls(cpus[0], cpus[1]) if len(cpus) >= 2 else cls(None, None)

    def taskset(self, role: str, argv: list) -> list:
        cpu = self.server_cpu if role == "server" else self.client_cpu
        return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]

    def iperf3(self, role: str) -> list:
        cpu = self.server_cpu if role == "server" else self.client_cpu
        return [] if cpu is None else ["-A", str(cpu)]

    def describe(self) -> dict[str, object]:
        return {"server_cpu": self.server_cpu, "client_cpu": self.client_cpu,
                "how": "iperf3 -A (each end), taskset -c for sockperf"
                if self.server_cpu is not None else "unpinned: fewer than 2 CPUs"}


UNPINNED = Layout(None, None)


@dataclass(frozen=True)
class Figure:
    metric: str
    value: float
    unit: str


@dataclass
class Outcome:
    spec: Spec
    figures: list[Figure]
    raw: str              # the tool's output, saved under raw/
    raw_ext: str          # json | txt
    error: str | None = None
    seconds: float = 0.0  # wall time of the measurement
    host: HostLoad | None = None   # what else the machine did meanwhile


# ---- readiness -------------------------------------------------------------------------------

def bound(ns: NetNS, port: int, proto: str) -> bool:
    """True when a socket of ``proto`` is listening (TCP) or bound (UDP) on ``port`` inside
    ``ns``; read from the namespace's own /proc/net tables, no packet sent."""
    state = "0A" if proto == "tcp" else "07"   # TCP_LISTEN / TCP_CLOSE (an unconnected UDP)
    with ns.enter():
        for table in (proto, proto + "6"):
            try:
                with open(f"/proc/thread-self/net/{table}") as fh:
                    next(fh)
                    for line in fh:
                        cols = line.split()
                        if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == state:
                            return True
            except FileNotFoundError:
                continue
    return False


def _tail(fh: object, limit: int = 800) -> str:
    fh.seek(0)  # type: ignore[attr-defined]
    data = fh.read().decode(errors="replace").strip()  # type: ignore[attr-defined]
    return data[-limit:]


def wait_ready(ns: NetNS, port: int, proto: str, proc: object, log: object, what: str) -> None:
    """Poll until the server is bound; ToolFailure if it exits or takes too long."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not bound(ns, port, proto):
        if proc.poll() is not None:  # type: ignore[attr-defined]
            raise ToolFailure(f"{what} server exited {proc.returncode} before listening: "  # type: ignore[attr-defined]
                              f"{_tail(log)}")
        if time.monotonic() > deadline:
            raise ToolFailure(f"{what} server not listening on port {port} after "
                              f"{READY_TIMEOUT_S:g} s: {_tail(log)}")
        time.sleep(0.005)


# ---- CPU cost --------------------------------------------------------------------------------

def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat (system-wide, not per namespace)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


class CpuWindow:
    """Samples /proc/stat ``start_s`` and ``end_s`` after :meth:`start`, in a thread, so the
    window matches the measured (post-warm-up) part of a run."""

    def __init__(self, start_s: float, end_s: float) -> None:
        self.start_s, self.end_s = start_s, end_s
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def _sample(self) -> None:
        for at in (self.start_s, self.end_s):
            delay = self.t0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.samples.append((time.monotonic(), cpu_ticks()[0]))

    def busy_seconds(self) -> tuple[float, float]:
        """(busy CPU-seconds, wall seconds) of the window."""
        self._thread.join()
        (ta, ba), (tb, bb) = self.samples
        return (bb - ba) / os.sysconf("SC_CLK_TCK"), tb - ta


# ---- disturbance -----------------------------------------------------------------------------

STEAL_LIMIT_PCT = 5.0       # a hypervisor took this share of CPU time from us
LOAD_PER_CPU_LIMIT = 1.5    # 1-min load average per CPU beyond which other work competes


@dataclass(frozen=True)
class HostLoad:
    """The machine during one measurement, from /proc/stat and /proc/loadavg."""

    steal_pct: float        # steal / all CPU time over the measurement
    load1: float            # 1-minute load average at its end
    cpus: int

    @property
    def disturbed(self) -> bool:
        """Visibly disturbed: a hypervisor stole time, or more runnable work than CPUs."""
        return self.steal_pct >= STEAL_LIMIT_PCT or self.load1 > LOAD_PER_CPU_LIMIT * self.cpus


def stat_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    fields = (fields + [0] * 8)[:8]
    return fields[7], sum(fields)


def load1() -> float:
    with open("/proc/loadavg") as fh:
        return float(fh.read().split()[0])


# ---- tools -----------------------------------------------------------------------------------

def _iperf_figures(spec: Spec, res: IperfResult, busy_s: float, wall_s: float) -> list[Figure]:
    gbit = res.bits_per_second * wall_s / 1e9
    cpu_per_gbit = busy_s / gbit if gbit > 0 else float("nan")
    if spec.proto == "tcp":
        return [Figure("throughput_bps", res.bits_per_second, "bit/s"),
                Figure("cpu_s_per_gbit", cpu_per_gbit, "s/Gbit"),
                Figure("iperf_cpu_host_pct", res.cpu_host_pct, "%"),
                Figure("iperf_cpu_remote_pct", res.cpu_remote_pct, "%")]
    return [Figure("udp_goodput_bps", res.bits_per_second, "bit/s"),
            Figure("udp_loss_pct", float(res.lost_percent or 0.0), "%"),
            Figure("udp_jitter_ms", float(res.jitter_ms if res.jitter_ms is not None
                                          else float("nan")), "ms"),
            Figure("udp_cpu_s_per_gbit", cpu_per_gbit, "s/Gbit")]


def pct_name(pct: float) -> str:
    """50.0 -> 'p50', 99.9 -> 'p999'."""
    return "p" + f"{pct:g}".replace(".", "")


def run_iperf3(spec: Spec, ep: Endpoints, params: Params, owner: object, port: int,
               layout: Layout = UNPINNED) -> Outcome:
    interval = f"{params.interval_s:g}"
    addr = ep.addr(spec.family)
    server = ["iperf3", "-s", "-1", "-J", "-i", interval, "-p", port, "-B", addr,
              *layout.iperf3("server")]
    client = ["iperf3", "-c", addr, "-p", port, "-t", params.duration_s,
              "-i", interval, "--get-server-output", "-J", "-P", spec.streams,
              *layout.iperf3("client")]
    if spec.direction == "reverse":
        client.append("-R")
    if spec.proto == "udp":
        client += ["-u", "-b", params.udp_rate]
    raw = ""
    with tempfile.TemporaryFile() as log, \
            bkg(server, ns=ep.server, owner=owner, stdout=log, stderr=log) as proc:
        try:
            wait_ready(ep.server, port, "tcp", proc, log, "iperf3")
            window = CpuWindow(params.omit_s, params.duration_s)
            window.start()
            res = cmd(client, ns=ep.client, timeout=params.duration_s + 30, check=False)
            raw = res.stdout
            parsed = parse_iperf3(res.stdout, params.omit_s)
            busy, wall = window.busy_seconds()
            return Outcome(spec, _iperf_figures(spec, parsed, busy, wall), raw, "json")
        except (ToolFailure, CmdError, MissingTool) as exc:
            proc.poll()
            extra = _tail(log, 400) if proc.returncode not in (None, 0) else ""
            return Outcome(spec, [], raw or str(exc), "json" if raw else "txt",
                           error=str(exc) + (f" | server: {extra}" if extra else ""))


def run_sockperf(spec: Spec, ep: Endpoints, params: Params, owner: object,
                 port: int, layout: Layout = UNPINNED) -> Outcome:
    proto = ["--tcp"] if spec.proto == "tcp" else []
    addr = ep.addr(spec.family)
    server = layout.taskset("server", ["sockperf", "sr", "-i", addr, "-p", port, *proto])
    client = layout.taskset("client", ["sockperf", "pp", "-i", addr, "-p", port,
                                       "-t", params.latency_s, *proto])
    raw = ""
    with tempfile.TemporaryFile() as log, \
            bkg(server, ns=ep.server, owner=owner, stdout=log, stderr=log,
                grace=SOCKPERF_GRACE_S) as proc:
        try:
            wait_ready(ep.server, port, spec.proto, proc, log, "sockperf")
            res = cmd(client, ns=ep.client, timeout=params.latency_s + 30, check=False)
            raw = res.stdout + res.stderr
            parsed = parse_sockperf(raw)
            what = "oneway" if parsed.measure == "one-way" else "rtt"
            figures = [Figure(f"{spec.proto}_{what}_latency_{pct_name(p)}_us", parsed.p(p), "us")
                       for p in LATENCY_PCTS]
            return Outcome(spec, figures, raw, "txt")
        except (ToolFailure, CmdError, MissingTool, KeyError) as exc:
            msg = f"sockperf: percentile {exc} missing" if isinstance(exc, KeyError) else str(exc)
            return Outcome(spec, [], raw or msg, "txt", error=msg)


PING_INTERVAL_S = 0.001    # iputils ping -i below 0.2 s needs root, which the suite has


def run_ping(spec: Spec, ep: Endpoints, params: Params, owner: object, port: int,
             layout: Layout = UNPINNED) -> Outcome:
    """ICMP echo round trips from the client to the server's address: answered by the
    server namespace's kernel, so no server process and no port."""
    count = max(10, int(params.latency_s / PING_INTERVAL_S))
    argv = layout.taskset("client", ["ping", "-n", "-i",
                                     f"{PING_INTERVAL_S:g}", "-c", count,
                                     "-w", params.latency_s + 10,
                                     "-6" if spec.family == "v6" else "-4",
                                     ep.addr(spec.family)])
    raw = ""
    try:
        res = cmd(argv, ns=ep.client, timeout=params.latency_s + 30, check=False)
        raw = res.stdout + res.stderr
        parsed = parse_ping(raw)
    except (ToolFailure, CmdError, MissingTool) as exc:
        return Outcome(spec, [], raw or str(exc), "txt", error=str(exc))
    figures = [Figure(f"icmp_rtt_latency_{pct_name(p)}_us", parsed.percentile(p), "us")
               for p in LATENCY_PCTS]
    if parsed.sent:
        figures.append(Figure("icmp_loss_pct", 100.0 * (parsed.sent - parsed.received)
                              / parsed.sent, "%"))
    return Outcome(spec, figures, raw, "txt")


def measure(spec: Spec, ep: Endpoints, params: Params, owner: object, port: int,
            layout: Layout = UNPINNED) -> Outcome:
    """Run one measurement; tool failures come back as ``Outcome.error``. The machine's
    steal time and load over the measurement come back in ``Outcome.host``."""
    t0 = time.monotonic()
    steal0, total0 = stat_ticks()
    run = {"iperf3": run_iperf3, "sockperf": run_sockperf, "ping": run_ping}[spec.tool]
    try:
        out = run(spec, ep, params, owner, port, layout)
    except ToolFailure as exc:   # e.g. no address of this family
        out = Outcome(spec, [], str(exc), "txt", error=str(exc))
    steal1, total1 = stat_ticks()
    out.seconds = time.monotonic() - t0
    out.host = HostLoad(100.0 * (steal1 - steal0) / max(1, total1 - total0), load1(),
                        os.cpu_count() or 1)
    return out
