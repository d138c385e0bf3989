"""A benchmark run: repetitions of the measurement matrix over live datapaths, each figure
appended to the results store as soon as it exists, with a live progress line.

Rows (table ``bench``): datapath, mode, flag, family, direction, streams, metric, value,
unit, repetition, tool, error, kernel, virt, and what the machine did meanwhile (steal_pct,
load1, disturbed) and the datapath's position in its repetition's order. Raw tool output
goes to ``raw/<datapath>/<measurement>-r<rep>.<json|txt>``; warm-up repetitions are run and
printed but neither stored nor counted.

Design (:meth:`Bench.run_blocks`): each repetition is a block in which every datapath is
measured once, in an order shuffled per block (seeded, recorded in meta.json), so a slow
drift of the machine spreads over all datapaths instead of landing on the ones measured
last. The server and client run pinned to distinct CPUs (:class:`~linklab.bench.measure.Layout`).
"""

from __future__ import annotations

import math
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from linklab import results as store
from linklab.bench.datapaths import LOOPBACK, Datapath
from linklab.bench.measure import MATRIX, Endpoints, Layout, Outcome, Params, Spec, measure
from linklab.cmd import cmd

BASE_PORT = 20000
SYSCTLS = ("net/ipv4/tcp_congestion_control", "net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem",
           "net/core/rmem_max", "net/core/wmem_max", "net/core/default_qdisc",
           "net/ipv4/tcp_timestamps", "net/ipv4/tcp_sack", "net/ipv4/tcp_ecn",
           "net/core/netdev_max_backlog")
LATENCY_DEFINITION = ("one-way latency = round-trip time / 2, as sockperf ping-pong prints "
                      "it without --full-rtt (metrics *_oneway_latency_pNN_us)")
CPU_DEFINITION = ("cpu_s_per_gbit: system-wide busy CPU-seconds (/proc/stat: user+nice+system+"
                  "irq+softirq+steal, all cores) over the post-warm-up window, per gigabit "
                  "received in that window; iperf_cpu_*_pct: iperf3's cpu_utilization_percent")


@dataclass
class Settings:
    """Everything that shapes a run; recorded in meta.json under ``bench``."""

    params: Params = field(default_factory=Params)
    reps: int = 5
    warmup: int = 1
    specs: tuple[Spec, ...] = MATRIX

    def check(self) -> None:
        self.params.check()
        if self.reps < 1:
            raise ValueError(f"repetitions must be >= 1, got {self.reps}")
        if self.warmup < 0:
            raise ValueError(f"warm-up repetitions must be >= 0, got {self.warmup}")

    @property
    def warmup_specs(self) -> tuple[Spec, ...]:
        """Warm-up repetitions run the iperf3 measurements only: sockperf warms up by itself
        (dummy messages, then the first 400 ms are not counted) and costs a fixed ~2.2 s."""
        return tuple(x for x in self.specs if x.tool == "iperf3")

    @property
    def warmup_params(self) -> Params:
        """Warm-up repetitions are short: they only have to warm caches, ARP and sockets."""
        return replace(self.params, duration_s=1, omit_s=0.0, latency_s=1)

    def estimate_s(self, n_datapaths: int) -> float:
        """A rough wall-time estimate of the matrix (tool time plus start-up)."""
        def per(p: Params, specs: Iterable[Spec]) -> float:
            # measured start-up/tear-down: iperf3 ~0.1 s; sockperf 3.7 sleeps 2 s before a test
            return sum(p.duration_s + 0.1 if s.tool == "iperf3" else
                       p.latency_s + (2.3 if s.tool == "sockperf" else 0.2) for s in specs)
        return n_datapaths * (self.reps * (per(self.params, self.specs) + 0.3) +
                              self.warmup * per(self.warmup_params, self.warmup_specs) + 0.5)


def tool_versions() -> dict[str, str]:
    out = {}
    for tool, argv in (("iperf3", ["iperf3", "--version"]), ("sockperf", ["sockperf", "--version"]),
                       ("ethtool", ["ethtool", "--version"])):
        try:
            res = cmd(argv, timeout=10, check=False)
        except Exception:
            out[tool] = "missing"
            continue
        text = re.sub(r"\x1b\[[0-9;]*m", "", res.stdout + res.stderr)
        m = re.search(r"(?:iperf|version|ethtool)\D*([0-9][0-9.]*[-\w.]*)", text)
        out[tool] = m.group(1) if m else text.strip().splitlines()[0][:60]
    return out


def offloads(ep: Endpoints) -> dict[str, dict[str, str]]:
    """``ethtool -k`` of the measured interfaces, inside their namespaces."""
    out: dict[str, dict[str, str]] = {}
    for role, ns in (("server", ep.server), ("client", ep.client)):
        ifname = ep.ifnames.get(role, "")
        if not ifname or ifname == "lo" and role == "client":
            continue
        try:
            res = cmd(["ethtool", "-k", ifname], ns=ns, timeout=10)
        except Exception as exc:
            out[role] = {"error": str(exc).splitlines()[0]}
            continue
        feats = {}
        for line in res.stdout.splitlines()[1:]:
            if ":" in line and not line.startswith("\t\t"):
                name, _, value = line.strip().partition(":")
                feats[name.strip()] = value.strip()
        out[role] = {"ifname": ifname, **feats}
    return out


def sysctls(ep: Endpoints) -> dict[str, str]:
    """Relevant sysctls as the server namespace sees them; global-only ones (absent from a
    namespace's /proc/sys) are read, never written, in our own namespace."""
    out = {}
    for key in SYSCTLS:
        name = key.replace("/", ".")
        try:
            out[name] = " ".join(ep.server.read_sysctl(key).split())
        except OSError:
            try:
                out[name] = " ".join(Path(f"/proc/sys/{key}").read_text().split())
            except OSError:
                continue
    return out


def headline(out: Outcome) -> str:
    """The progress figure of one measurement (display only; the store keeps numbers)."""
    if out.error:
        return "ERROR " + out.error.splitlines()[0][:100]
    f = {x.metric: x.value for x in out.figures}
    if "throughput_bps" in f:
        return f"{f['throughput_bps'] / 1e9:7.2f} Gbit/s  cpu {f['cpu_s_per_gbit']:.3f} s/Gbit"
    if "udp_goodput_bps" in f:
        return (f"{f['udp_goodput_bps'] / 1e9:7.2f} Gbit/s  loss {f['udp_loss_pct']:.2f} %  "
                f"jitter {f['udp_jitter_ms']:.3f} ms")
    lat = {m.split("_latency_")[1]: v for m, v in f.items() if "_latency_" in m}
    return "  ".join(f"{k.removesuffix('_us')} {v:.1f} us" for k, v in lat.items())


class Bench:
    """Runs the matrix on datapaths, writing rows, raw output and meta to ``results``."""

    def __init__(self, results: store.RunDir, run: object, settings: Settings,
                 progress: Callable[[str], None] = print, part: str = "",
                 layout: Layout | None = None, seed: int | None = None) -> None:
        settings.check()
        self.results = results
        self.run = run
        self.settings = settings
        self.progress = progress
        self.part = part
        self.kernel = store.kernel_release()
        self.virt = store.virtualisation()
        self.layout = layout if layout is not None else Layout.choose()
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**31)
        self.meta: dict[str, Any] = {"datapaths": {}, "layout": self.layout.describe(),
                                     "order_seed": self.seed, "blocks": []}
        self.disturbed = 0
        self.started: float | None = None
        self.measurements = 0
        self.seconds = 0.0
        self._port = 0

    def _next_port(self) -> int:
        self._port = (self._port + 1) % 1000
        return BASE_PORT + self._port

    def write_meta(self) -> None:
        s = self.settings
        bench = {"reps": s.reps, "warmup_reps": s.warmup, "params": asdict(s.params),
                 "warmup_params": asdict(s.warmup_params),
                 "warmup_matrix": [x.name for x in s.warmup_specs],
                 "matrix": [asdict(x) for x in s.specs],
                 "families": sorted({x.family for x in s.specs}),
                 "disturbed_rule": "steal_pct >= 5 or load1 > 1.5 x CPUs",
                 "latency": LATENCY_DEFINITION, "cpu": CPU_DEFINITION,
                 "sockperf_message_bytes": 14, **self.meta}
        current = self.results.read_meta() if (self.results.path / "meta.json").exists() else {}
        tools = {**current.get("tools", {}), **tool_versions()}
        self.results.write_meta(store.machine_meta() | {"bench": bench, "tools": tools})

    def _describe(self, dp: Datapath, ep: Endpoints) -> None:
        self.meta["datapaths"][dp.name] = {
            "kind": dp.kind, "mode": dp.mode, "flag": dp.flag,
            "scenario": str(dp.scenario.path) if dp.scenario else None,
            "mtu": dp.scenario.mtu if dp.scenario else (65536 if dp is LOOPBACK else 1400),
            "server_addr": ep.server_addr, "server_addr6": ep.server_addr6,
            "offloads": offloads(ep), "sysctls": sysctls(ep)}
        self.write_meta()

    def _measure(self, dp: Datapath, ep: Endpoints, rep: int, position: int,
                 specs: Sequence[Spec], params: Params, total: int) -> list[str]:
        """One datapath's measurements of one repetition (rep <= 0: warm-up, not stored)."""
        errors = []
        for spec in specs:
            if spec.family == "v6" and not ep.server_addr6:
                continue     # a v4-only scenario: no v6 row at all rather than an error
            out = measure(spec, ep, params, self.run, self._next_port(), self.layout)
            warm = rep <= 0
            tag = "warm-up" if warm else f"rep {rep}/{total}"
            flag = "  [disturbed]" if out.host is not None and out.host.disturbed else ""
            self.progress(f"bench {dp.name:<21} {spec.name:<18} {tag:<9} {headline(out)}{flag}")
            if warm:
                continue
            self.measurements += 1
            self.seconds += out.seconds
            self.disturbed += bool(flag)
            self._store(dp, spec, rep, out, position)
            if out.error:
                errors.append(f"{dp.name} {spec.name} rep {rep}: {out.error}")
        return errors

    def run_datapath(self, dp: Datapath, ep: Endpoints) -> list[str]:
        """Warm-up, then the repetitions of every measurement on one live datapath (no
        interleaving: for a single datapath, e.g. bench/test_regression.py)."""
        if self.started is None:
            self.started = time.time()
        self._describe(dp, ep)
        s = self.settings
        errors: list[str] = []
        for rep in range(1 - s.warmup, s.reps + 1):
            warm = rep <= 0
            errors += self._measure(dp, ep, rep, 0, s.warmup_specs if warm else s.specs,
                                    s.warmup_params if warm else s.params, s.reps)
        self.meta["datapaths"][dp.name]["ended"] = time.time()
        self.meta["wall_s"] = time.time() - self.started
        self.write_meta()
        return errors

    def run_blocks(self, dps: Sequence[Datapath],
                   open_dp: Callable[[Datapath], Any]) -> dict[str, list[str]]:
        """Every datapath's warm-up, then ``reps`` blocks; in each block every datapath is
        built (``open_dp(dp)``: a context manager yielding its Endpoints), measured once and
        torn down, in a shuffled order. Returns the error texts per datapath name."""
        if self.started is None:
            self.started = time.time()
        s = self.settings
        errors: dict[str, list[str]] = {dp.name: [] for dp in dps}
        for dp in dps:
            with open_dp(dp) as ep:
                self._describe(dp, ep)
                for rep in range(1 - s.warmup, 1):
                    errors[dp.name] += self._measure(dp, ep, rep, 0, s.warmup_specs,
                                                     s.warmup_params, s.reps)
        rng = random.Random(self.seed)
        for rep in range(1, s.reps + 1):
            order = list(dps)
            rng.shuffle(order)
            self.meta["blocks"].append([dp.name for dp in order])
            self.progress(f"bench block {rep}/{s.reps}: {', '.join(d.name for d in order)}")
            for position, dp in enumerate(order):
                with open_dp(dp) as ep:
                    errors[dp.name] += self._measure(dp, ep, rep, position, s.specs,
                                                     s.params, s.reps)
                self.meta["datapaths"][dp.name]["ended"] = time.time()
            self.meta["wall_s"] = time.time() - self.started
            self.write_meta()
        return errors

    def _store(self, dp: Datapath, spec: Spec, rep: int, out: Outcome, position: int = 0) -> None:
        raw_dir = self.results.path / "raw" / dp.name
        raw_dir.mkdir(parents=True, exist_ok=True)
        store.atomic_write(raw_dir / f"{spec.name}-r{rep}.{out.raw_ext}", out.raw)
        base = {"datapath": dp.kind, "mode": dp.mode, "flag": dp.flag, "family": spec.family,
                "direction": spec.direction, "streams": spec.streams, "repetition": rep,
                "tool": spec.tool, "kernel": self.kernel, "virt": self.virt,
                "position": position}
        if out.host is not None:
            base |= {"steal_pct": round(out.host.steal_pct, 3), "load1": out.host.load1,
                     "disturbed": out.host.disturbed}
        if out.error:
            self.results.append("bench", base | {"metric": spec.primary, "value": None,
                                                 "unit": "", "error": out.error},
                                part=self.part)
            return
        for fig in out.figures:
            value = fig.value if math.isfinite(fig.value) else None
            self.results.append("bench", base | {"metric": fig.metric, "value": value,
                                                 "unit": fig.unit, "error": ""},
                                part=self.part)
