"""Baseline comparison: is a figure of this run worse than the same figure of a saved run?

A :class:`Threshold` (``throughput:5%``) fails a figure only when the median is worse by
more than the threshold AND the two 95 % confidence intervals do not overlap, so noise alone
never counts. Figures are matched on everything that defines them (datapath, mode, flag,
family, direction, streams, metric, unit, virtualisation): a VM leg is never compared with
the host. A baseline from another machine or kernel gives warnings, not silence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from linklab.stats import Summary, overlap, summarise

KEY = ("virt", "datapath", "mode", "flag", "family", "direction", "streams", "metric", "unit")
HIGHER_IS_BETTER = ("throughput", "goodput", "bps")   # metric name tokens


class FailOnError(ValueError):
    """A --bench-fail-on value that cannot be parsed; the message names the bad part."""


def tokens(metric: str) -> list[str]:
    return metric.lower().split("_")


def higher_is_better(metric: str) -> bool:
    """Throughput-like metrics improve upwards; latency, CPU cost, loss, jitter downwards."""
    return any(t in HIGHER_IS_BETTER for t in tokens(metric))


@dataclass(frozen=True)
class Threshold:
    """Fail a figure whose metric matches ``metric`` when it is worse by more than ``pct`` %
    and its confidence interval is apart from the baseline's."""

    metric: str
    pct: float

    def matches(self, metric: str) -> bool:
        """``latency_p99`` matches ``tcp_oneway_latency_p99_us`` (whole ``_`` tokens, in
        order) but not ``latency_p999_us``."""
        want, have = tokens(self.metric), tokens(metric)
        return any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))

    def worse_pct(self, current: Summary, baseline: Summary, metric: str | None = None) -> float:
        """How much worse the current median is, in % of the baseline (negative: better)."""
        if baseline.median == 0:
            return math.inf if current.median != 0 else 0.0
        change = 100.0 * (current.median - baseline.median) / abs(baseline.median)
        return -change if higher_is_better(metric or self.metric) else change

    def fails(self, current: Summary, baseline: Summary, metric: str | None = None) -> bool:
        """True when the figure regressed beyond the threshold and beyond the noise."""
        return self.worse_pct(current, baseline, metric) > self.pct and \
            not overlap(current, baseline)


def parse_fail_on(spec: str) -> list[Threshold]:
    """``"throughput:5%,latency_p99:10%"`` -> thresholds; FailOnError names the bad item."""
    out: list[Threshold] = []
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        m = re.fullmatch(r"([a-z][a-z0-9_]*):([0-9]+(?:\.[0-9]+)?)%?", item, re.IGNORECASE)
        if not m:
            raise FailOnError(f"--bench-fail-on: {item!r} is not METRIC:PCT% "
                              "(e.g. throughput:5%,latency_p99:10%)")
        out.append(Threshold(m.group(1).lower(), float(m.group(2))))
    return out


@dataclass(frozen=True)
class Delta:
    """One figure in both runs."""

    key: tuple[Any, ...]
    current: Summary
    baseline: Summary
    change_pct: float              # signed change of the median, % of the baseline
    failed: tuple[Threshold, ...]  # thresholds this figure breaks

    @property
    def metric(self) -> str:
        return str(self.key[KEY.index("metric")])

    @property
    def noise(self) -> bool:
        """The confidence intervals overlap: the change may be noise."""
        return overlap(self.current, self.baseline)

    def label(self) -> str:
        k = dict(zip(KEY, self.key))
        dp = " ".join(str(p) for p in (k["datapath"], k["mode"], k["flag"]) if p)
        return f"{dp} {k['family']} {k['direction']} x{k['streams']} {k['metric']}"


def summaries(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], Summary]:
    """Group measurement rows by :data:`KEY` and summarise the values (error rows skipped)."""
    groups: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        if r.get("error") or r.get("value") is None:
            continue
        key = tuple("" if r.get(k) is None else r.get(k) for k in KEY)
        groups.setdefault(key, []).append(float(r["value"]))
    return {k: summarise(v) for k, v in groups.items()
            if any(math.isfinite(x) for x in v)}


def compare(current_rows: Iterable[Mapping[str, Any]], baseline_rows: Iterable[Mapping[str, Any]],
            thresholds: Sequence[Threshold] = ()) -> list[Delta]:
    """Per-figure deltas for the figures present in both runs, in the current run's order."""
    cur, base = summaries(current_rows), summaries(baseline_rows)
    out = []
    for key, c in cur.items():
        b = base.get(key)
        if b is None:
            continue
        metric = str(key[KEY.index("metric")])
        change = 100.0 * (c.median - b.median) / abs(b.median) if b.median else math.nan
        failed = tuple(t for t in thresholds if t.matches(metric) and t.fails(c, b, metric))
        out.append(Delta(key, c, b, change, failed))
    return out


def machine_mismatch(current: Mapping[str, Any], baseline: Mapping[str, Any]) -> list[str]:
    """What differs between the machines of two runs (kernel, CPU, cores, virtualisation)."""
    out = []
    for key, name in (("kernel", "kernel"), ("cpu_model", "CPU"), ("cores", "cores"),
                      ("virt", "virtualisation")):
        a, b = current.get(key), baseline.get(key)
        if a is not None and b is not None and a != b:
            out.append(f"{name} differs: baseline {b}, this run {a}")
        elif b is None and a is not None:
            out.append(f"{name} of the baseline is unknown (this run: {a})")
    return out
