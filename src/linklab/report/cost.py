"""The report's "Cost per packet" section: what each datapath costs in guest instructions, from
the bench rows measured on the instruction clock (``virt = tcg-icount``: QEMU TCG with
``-icount shift=0``, one guest nanosecond per guest instruction).

Per kernel and path (c2 -> c1, remote -> c1) and metric: instructions per unit of work, its CV
and n, efficiency against loopback, the anatomy's stack entries, and a verdict against the
path's yardstick (veth pair; veth for the wire path) from the bench's own test
(:func:`linklab.bench.compare.judge_one` / ``finish``: Welch on logs, Holm) with a 2 %
threshold. With rows of several kernels, each figure kernel against kernel. And the agreement
of this ranking with the host's wall-clock one (:func:`agreement`, also printed by the bench
script). Instruction rows never meet wall-clock rows: :func:`wall_clock` is what every other
bench section reads. Data only; ``templates/sections/cost.html`` formats it.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import scipy.stats

from linklab.bench import compare as cmp
from linklab.bench.stats import summarise
from linklab.report.aggregate import LOOPBACK, Results, datapath_label
from linklab.report.anatomy import ELSEWHERE

ICOUNT_VIRT = "tcg-icount"       # linklab.vm.ICOUNT_VIRT: rows counted in guest instructions
FROM_REMOTE = "from-remote"      # a flag part of the remote -> container rows
THRESHOLD = cmp.Threshold("*", 2.0, ICOUNT_VIRT)
HOW_TO = ("make cost", "pytest --vm --vm-clock=instructions -m cost")


@dataclass(frozen=True)
class CostMetric:
    """One cost metric and, where the host bench measures the same work, its wall-clock twin
    (metric, direction, streams; throughput is inverted before ranking)."""

    name: str
    what: str                # the bench row's direction column
    per: str
    title: str
    wall: tuple[str, str, str] | None = None


METRICS: tuple[CostMetric, ...] = (
    CostMetric("instructions_per_round_trip", "rr", "round trip",
               "UDP request/response, 64 B", ("udp_oneway_latency_p50_us", "pingpong", "1")),
    CostMetric("instructions_per_packet", "packet", "packet", "UDP datagrams, 64 B"),
    CostMetric("instructions_per_echo", "icmp", "echo", "ICMP echo",
               ("icmp_rtt_latency_p50_us", "pingpong", "1")),
    CostMetric("instructions_per_connection", "conn", "connection",
               "TCP connect, 1-byte request and reply, close"),
    CostMetric("instructions_per_byte", "bulk", "byte", "TCP bulk, a fixed volume",
               ("throughput_bps", "forward", "1")),
)
BY_NAME = {m.name: m for m in METRICS}


@dataclass(frozen=True)
class PathDef:
    """A measured path and the datapath every other one on it is judged against."""

    id: str
    title: str
    reference: tuple[str, str, str]     # (datapath, mode, flag)


PATHS = (PathDef("child", "c2 → c1 (container to container)", ("veth-pair", "", "")),
         PathDef("remote", "remote → c1 (the wire path)", ("veth", "", "")))
# anatomy probe of each path: (check, direction, count only c1's host's namespaces)
ANATOMY_PROBE = {"child": ("child-to-child", "request", False),
                 "remote": ("child-to-remote", "reply", True)}
# datapaths the host kernel has, for the agreement with the wall clock (datapath, mode)
HOST_DATAPATHS = (("loopback", ""), ("veth-pair", ""), ("veth", ""), ("bridge", ""),
                  ("macvlan", "bridge"), ("veth-bpf", ""))


# ---- rows ------------------------------------------------------------------------------------

def is_cost(frame: pd.DataFrame) -> pd.Series:
    """Which bench rows are instruction counts (never to be mixed with wall-clock rows)."""
    return frame["virt"] == ICOUNT_VIRT


def wall_clock(results: Results) -> Results:
    """``results`` without its instruction-clock bench rows: what the wall-clock sections read."""
    bench = results.tables["bench"]
    if not is_cost(bench).any():
        return results
    tables = dict(results.tables, bench=bench[~is_cost(bench)])
    return Results(results.path, results.run_id, results.meta, tables, results.junit,
                   results.notes)


def split_flag(flag: str) -> tuple[str, str]:
    """('bridge+from-remote') -> ('remote', 'bridge'); a flag without it is c2 -> c1."""
    parts = [p for p in flag.split("+") if p]
    path = "remote" if FROM_REMOTE in parts else "child"
    return path, "+".join(p for p in parts if p != FROM_REMOTE)


def cost_rows(bench: pd.DataFrame) -> pd.DataFrame:
    """The instruction-clock rows that measured, with their ``path`` and ``base_flag``."""
    ok = bench[is_cost(bench) & (bench["error"] == "") & bench["value"].notna()].copy()
    split = [split_flag(f) for f in ok["flag"]]
    ok["path"] = [p for p, _ in split]
    ok["base_flag"] = [f for _, f in split]
    return ok


def kernel_order(release: str) -> tuple[int, ...]:
    """'6.12.118+deb12-amd64' -> (6, 12, 118): kernels oldest first."""
    m = re.match(r"\d+(?:\.\d+)*", release)
    return tuple(int(x) for x in m.group(0).split(".")) if m else ()


Datapath = tuple[str, str, str]          # (datapath, mode, flag without from-remote)


def figures(rows: pd.DataFrame, kernel: str, path: str,
            metric: str) -> dict[Datapath, list[float]]:
    """Repetition values of each datapath for one kernel, path and metric, in row order."""
    part = rows[(rows["kernel"] == kernel) & (rows["path"] == path) & (rows["metric"] == metric)]
    out: dict[Datapath, list[float]] = {}
    for dp, group in part.groupby(["datapath", "mode", "base_flag"], sort=False):
        out[tuple(str(x) for x in dp)] = [float(v) for v in group["value"]]  # type: ignore[index]
    return out


# ---- verdicts --------------------------------------------------------------------------------

@dataclass(frozen=True)
class CostVerdict:
    """One datapath against another in instructions: ``word`` is cheaper | costlier (the test
    separates them and the change is at least the threshold), within threshold (separated,
    smaller), same (no detectable difference), below resolution or cannot judge (no verdict).
    ``change_pct``: signed change of a against b (+ = costlier), with its 95 % interval."""

    word: str
    change_pct: float
    low_pct: float
    high_pct: float
    threshold_pct: float
    text: str          # compare's own words when there is no verdict, else ''
    verdict: cmp.Verdict

    @property
    def judged(self) -> bool:
        return self.word in ("cheaper", "costlier", "within threshold", "same")

    @property
    def css(self) -> str:
        return {"cheaper": "v-better", "costlier": "v-worse", "within threshold": "v-same",
                "same": "v-same"}.get(self.word, "v-cannot")

    @property
    def size(self) -> tuple[float, float, float]:
        """The change in the direction of the word (cheaper: fewer instructions), with its
        interval, low first."""
        if self.change_pct >= 0:
            return self.change_pct, self.low_pct, self.high_pct
        return -self.change_pct, -self.high_pct, -self.low_pct

    @property
    def three_way(self) -> str:
        """cheaper / costlier / within noise: the words the agreement table compares."""
        return self.word if self.word in ("cheaper", "costlier") else "within noise"


IDENTICAL = "identical repetitions: below resolution"


def cost_verdict(v: cmp.Verdict, threshold: cmp.Threshold = THRESHOLD) -> CostVerdict:
    """The words of one finished verdict for an instruction figure (lower is cheaper).

    A verdict needs spread: when neither side's repetitions vary, the interval would come from
    the recorded step alone (near zero width), so the figure gets no verdict (:data:`IDENTICAL`).
    A difference of exactly the threshold counts (``Threshold.fails`` asks for more than it)."""
    change = v.change_pct
    low, high = 100.0 * (v.ratio_low - 1), 100.0 * (v.ratio_high - 1)
    if v.kind == "cannot":
        word, text = "cannot judge", v.text()
    elif v.below_resolution:
        word, text = "below resolution", v.text()
    elif v.se == 0:
        word, text = "below resolution", IDENTICAL
    elif v.kind == "same":
        word, text = "same", v.text()
    elif abs(change) >= threshold.pct - 1e-9:
        word, text = ("costlier" if change > 0 else "cheaper"), ""
    else:
        word, text = "within threshold", ""
    return CostVerdict(word, change, low, high, threshold.pct, text, v)


def judge(pairs: Sequence[tuple[Iterable[float], Iterable[float]]], metric: str,
          threshold: cmp.Threshold = THRESHOLD) -> list[CostVerdict]:
    """Each ``(a values, b values)`` of one metric: a against b, Holm-corrected together."""
    verdicts = cmp.finish([cmp.judge_one(a, b, metric) for a, b in pairs])
    return [cost_verdict(v, threshold) for v in verdicts]


# ---- the anatomy beside each figure ----------------------------------------------------------

@dataclass(frozen=True)
class Stack:
    """Receive-stack entries of the path's probe packet, the namespaces they were in, and the
    anatomy leg that traced it."""

    count: int | None          # None: traced but not delivered
    where: str
    end: str = ""
    leg: str = ""


def _own_scenario(row: Mapping[str, Any]) -> bool:
    """The anatomy row of a datapath's own scenario (``macvlan-vepa-hairpin``), the one the
    bench measures: a two-host scenario of the same kind (``twohost-bridge``) crosses a wire
    between c1 and c2 and counts differently."""
    own = "-".join(p for p in (row["kind"], row["mode"], row["flag"]) if p)
    return row["scenario"] == own


def stack_entries(results: Results, kernel: str
                  ) -> tuple[dict[tuple[str, Datapath], Stack], list[tuple[str, list[str]]]]:
    """(path, datapath) -> stack entries of one IPv4 packet from the anatomy table: each
    datapath from the leg of this kernel if traced there, else from the host's (the VM leg
    traces the kinds the host lacks); and each leg used with the datapaths it gave."""
    frame = results.tables.get("anatomy")
    if frame is None or frame.empty:
        return {}, []
    legs = results.legs("anatomy")
    order = [lg for lg in legs if lg.kernel == kernel] + [lg for lg in legs if lg.is_host]
    out: dict[tuple[str, Datapath], Stack] = {}
    used: dict[str, list[str]] = {}
    for leg in dict.fromkeys(order):
        rows = results.leg_rows("anatomy", leg)
        rows = rows[rows["family"] == "v4"].drop_duplicates(
            ["scenario", "check", "family", "direction"], keep="last")
        for r in rows.to_dict("records"):
            if not _own_scenario(r):
                continue
            dp = (r["kind"], r["mode"], r["flag"])
            for path, (check, direction, local) in ANATOMY_PROBE.items():
                if r["check"] != check or r["direction"] != direction or (path, dp) in out:
                    continue
                where = [ns for ns in str(r["stack_ns"]).split(",")
                         if ns and not (local and ns in ELSEWHERE)]
                delivered = r["delivered"] == "True"
                out[(path, dp)] = Stack(len(where) if delivered else None, ",".join(where),
                                        "" if delivered else str(r["end"]), leg.label)
                if datapath_label(*dp) not in used.setdefault(leg.label, []):
                    used[leg.label].append(datapath_label(*dp))
    return out, [(leg, sorted(dps)) for leg, dps in used.items()]


# ---- the section -----------------------------------------------------------------------------

@dataclass
class CostFigure:
    """One datapath's figure in a table: mean over the repetitions, CV, n, and how it compares."""

    place: int
    datapath: Datapath
    label: str
    mean: float
    cv: float                      # fraction; NaN with one repetition
    n: int
    reference: bool
    efficiency: float | None       # loopback / this datapath (c2 -> c1 only)
    verdict: CostVerdict | None    # against the path's reference (None: the reference itself)
    stack: Stack | None


@dataclass
class CostTable:
    metric: CostMetric
    path: PathDef
    reference: str                 # its label; '' when this run lacks it
    rows: list[CostFigure]


@dataclass
class KernelCost:
    kernel: str
    paths: list[tuple[PathDef, list[CostTable]]]
    anatomy_legs: list[tuple[str, list[str]]]   # each leg the stack entries come from, and
    #                                              the datapaths it gave ([] when not traced)


@dataclass
class KernelChange:
    """One datapath and metric on two kernels: the newer against the older."""

    label: str
    path: PathDef
    metric: CostMetric
    old: str
    new: str
    old_mean: float
    new_mean: float
    verdict: CostVerdict


@dataclass
class PairVerdicts:
    a: str
    b: str
    cost: str                      # cheaper | costlier | within noise (a against b)
    wall: str
    agree: bool


@dataclass
class Agreement:
    """The instruction-clock ranking beside the host's wall-clock ranking for one metric pair."""

    kernel: str                    # the instruction-clock kernel
    host: str                      # the host's kernel
    metric: CostMetric
    wall_metric: str               # '' when the host bench has no counterpart
    ranking: list[tuple[str, float, float | None]]   # (label, instructions, wall figure)
    pairs: list[PairVerdicts]
    rho: float | None              # Spearman's rank correlation (None: < 3 datapaths)
    p: float | None

    @property
    def agreeing(self) -> int:
        return sum(p.agree for p in self.pairs)


@dataclass
class CostSection:
    kernels: list[KernelCost]
    changes: list[KernelChange]
    agreement: list[Agreement]
    threshold_pct: float
    clock: dict[str, Any] = field(default_factory=dict)       # meta.json's "cost"
    how_to: tuple[str, ...] = HOW_TO

    @property
    def empty(self) -> bool:
        return not self.kernels


def _label(dp: Datapath) -> str:
    return datapath_label(*dp)


def tables(rows: pd.DataFrame, kernel: str, stacks: Mapping[tuple[str, Datapath], Stack],
           threshold: cmp.Threshold = THRESHOLD) -> list[tuple[PathDef, list[CostTable]]]:
    """Per path and metric of one kernel: datapaths cheapest first, each against the path's
    reference (one Holm family per table)."""
    out = []
    for path in PATHS:
        made = []
        for metric in METRICS:
            figs = figures(rows, kernel, path.id, metric.name)
            if not figs:
                continue
            ref = figs.get(path.reference)
            loop = figs.get((LOOPBACK, "", "")) if path.id == "child" else None
            loop_mean = summarise(loop).mean if loop else None
            others = [dp for dp in figs if dp != path.reference]
            verdicts = dict(zip(others, judge([(figs[dp], ref) for dp in others],
                                              metric.name, threshold))) if ref else {}
            summaries = {dp: summarise(v) for dp, v in figs.items()}
            order = sorted(figs, key=lambda dp: summaries[dp].mean)
            made.append(CostTable(metric, path, _label(path.reference) if ref else "", [
                CostFigure(i + 1, dp, _label(dp), summaries[dp].mean, summaries[dp].cv,
                           summaries[dp].n, dp == path.reference,
                           loop_mean / summaries[dp].mean if loop_mean else None,
                           verdicts.get(dp), stacks.get((path.id, dp)))
                for i, dp in enumerate(order)]))
        if made:
            out.append((path, made))
    return out


def kernel_changes(rows: pd.DataFrame, threshold: cmp.Threshold = THRESHOLD) -> list[KernelChange]:
    """Each kernel against the next newer one: every datapath, path and metric measured on
    both (one Holm family per kernel pair and metric), costlier ones first."""
    kernels = sorted(set(rows["kernel"]), key=kernel_order)
    out: list[KernelChange] = []
    for old, new in itertools.pairwise(kernels):
        for metric in METRICS:
            keys, pairs = [], []
            for path in PATHS:
                a = figures(rows, old, path.id, metric.name)
                b = figures(rows, new, path.id, metric.name)
                for dp in (dp for dp in b if dp in a):
                    keys.append((path, dp, a[dp], b[dp]))
                    pairs.append((b[dp], a[dp]))
            for (path, dp, va, vb), v in zip(keys, judge(pairs, metric.name, threshold)):
                out.append(KernelChange(_label(dp), path, metric, old, new,
                                        summarise(va).mean, summarise(vb).mean, v))
    # per kernel pair, what got costlier first, the largest change first
    rank = {"costlier": 0, "cheaper": 1}
    out.sort(key=lambda c: (kernel_order(c.new), rank.get(c.verdict.word, 2),
                            -abs(c.verdict.change_pct)))
    return out


def _wall_values(bench: pd.DataFrame, host: tuple[str, str], wall: tuple[str, str, str]
                 ) -> dict[Datapath, list[float]]:
    metric, direction, streams = wall
    ok = bench[(bench["kernel"] == host[0]) & (bench["virt"] == host[1])
               & (bench["error"] == "") & bench["value"].notna() & (bench["metric"] == metric)
               & (bench["direction"] == direction) & (bench["streams"] == streams)
               & (bench["flag"] == "") & (bench["family"].isin(["v4", ""]))]
    return {tuple(str(x) for x in dp): [float(v) for v in g["value"]]  # type: ignore[misc]
            for dp, g in ok.groupby(["datapath", "mode", "flag"], sort=False)}


def _wall_word(v: cmp.Verdict) -> str:
    """A wall-clock verdict in the cost words (faster is cheaper)."""
    return {"better": "cheaper", "worse": "costlier"}.get(v.kind, "within noise")


def agreement(results: Results, threshold: cmp.Threshold = THRESHOLD) -> list[Agreement]:
    """For the datapaths the host kernel has, per instruction-clock kernel and metric: the
    instruction ranking beside the host's wall-clock one (c2 -> c1), both verdicts for every
    pair of datapaths, and Spearman's rank correlation (throughput inverted: a cost)."""
    bench = results.tables["bench"]
    rows = cost_rows(bench)
    host_virt = str(results.meta.get("virt") or "none")
    hosts = sorted({k for k, v in zip(bench["kernel"], bench["virt"]) if v == host_virt})
    host_kernel = str(results.meta.get("kernel") or (hosts[0] if hosts else ""))
    out = []
    for kernel in sorted(set(rows["kernel"]), key=kernel_order):
        for metric in METRICS:
            figs = figures(rows, kernel, "child", metric.name)
            mine = {dp: v for dp, v in figs.items()
                    if (dp[0], dp[1]) in HOST_DATAPATHS and dp[2] in ("", "bpf")}
            wall = _wall_values(bench, (host_kernel, host_virt), metric.wall) \
                if metric.wall else {}
            by_dp = {(dp[0], dp[1]): dp for dp in wall}
            both = [dp for dp in mine if (dp[0], dp[1]) in by_dp]
            both.sort(key=lambda dp: summarise(mine[dp]).mean)
            up = metric.wall is not None and cmp.higher_is_better(metric.wall[0])
            wall_of = {dp: wall[by_dp[(dp[0], dp[1])]] for dp in both}
            ranking = [(_label(dp), summarise(mine[dp]).mean,
                        summarise(wall_of[dp]).mean if dp in wall_of else None)
                       for dp in (both or sorted(mine, key=lambda d: summarise(mine[d]).mean))]
            pairs_dp = list(itertools.combinations(both, 2))
            cost_v = judge([(mine[a], mine[b]) for a, b in pairs_dp], metric.name, threshold)
            wall_v = cmp.judge([(wall_of[a], wall_of[b], metric.wall[0])
                                for a, b in pairs_dp]) if metric.wall else []
            pairs = [PairVerdicts(_label(a), _label(b), c.three_way, _wall_word(w),
                                  c.three_way == _wall_word(w))
                     for (a, b), c, w in zip(pairs_dp, cost_v, wall_v)]
            rho = p = None
            if len(both) >= 3:
                cost_means = [summarise(mine[dp]).mean for dp in both]
                wall_means = [summarise(wall_of[dp]).mean * (-1 if up else 1) for dp in both]
                res = scipy.stats.spearmanr(cost_means, wall_means)
                rho, p = float(res.statistic), float(res.pvalue)
                rho, p = (None, None) if math.isnan(rho) else (rho, p)
            out.append(Agreement(kernel, host_kernel, metric,
                                 metric.wall[0] if metric.wall else "", ranking, pairs, rho, p))
    return out


def build(results: Results, threshold: cmp.Threshold = THRESHOLD) -> CostSection:
    """The section's view data (rendered by templates/sections/cost.html); without
    instruction rows it holds only how to measure them."""
    rows = cost_rows(results.tables["bench"])
    clock = results.meta.get("cost") if isinstance(results.meta.get("cost"), dict) else {}
    if rows.empty:
        return CostSection([], [], [], threshold.pct, clock or {})
    kernels = []
    for kernel in sorted(set(rows["kernel"]), key=kernel_order, reverse=True):
        stacks, legs = stack_entries(results, kernel)
        kernels.append(KernelCost(kernel, tables(rows, kernel, stacks, threshold), legs))
    return CostSection(kernels, kernel_changes(rows, threshold), agreement(results, threshold),
                       threshold.pct, clock or {})
