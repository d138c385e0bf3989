"""Comparing repetitions: is one set of figures faster, slower, or not detectably different
from another (datapath against datapath, or this run against a saved baseline)?

One test serves the report, the summary and the ``--bench-fail-on`` gate:

* the effect is a ratio (throughput and latency change multiplicatively): Welch's t-test on
  the log values gives the ratio of the geometric means, its 95 % interval and p;
* significance is corrected with Holm's method across the figures judged together (a
  family), so 200 figures do not produce a "difference" by chance;
* honesty: a side with too few repetitions gives ``cannot judge (n=1)``, a difference
  not shown gives ``no detectable difference (smallest detectable ≈ Y %)``, and a difference
  within the figure's resolution (values recorded in steps of 1 µs, repetitions that do not
  vary) gives ``no verdict: below the figure's resolution``: the interval is never narrower
  than what the recorded steps allow, so it never has zero width.

A :class:`Threshold` (``throughput:5%``, or ``*@tcg-icount:2%`` for one row kind) fails a
figure only when its verdict is *worse* (significant after Holm) AND it is worse by more
than the threshold; of the thresholds that apply to a figure the most specific judges it.
Figures are matched on everything that defines them (:data:`KEY`): a VM leg never meets the
host.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from linklab.bench.stats import Summary, detectable_change, holm, overlap, summarise, welch_log

KEY = ("virt", "datapath", "mode", "flag", "family", "direction", "streams", "metric", "unit")
HIGHER_IS_BETTER = ("throughput", "goodput", "bps")   # metric name tokens
ALPHA = 0.05


class FailOnError(ValueError):
    """A --bench-fail-on value that cannot be parsed; the message names the bad part."""


def tokens(metric: str) -> list[str]:
    return metric.lower().split("_")


def higher_is_better(metric: str) -> bool:
    """Throughput-like metrics improve upwards; latency, CPU cost, loss, jitter downwards."""
    return any(t in HIGHER_IS_BETTER for t in tokens(metric))


def _words(metric: str) -> tuple[str, str]:
    """How a better / worse change of this metric reads."""
    t = tokens(metric)
    if "cpu" in t:
        return "cheaper", "costlier"
    if higher_is_better(metric) or "latency" in t:
        return "faster", "slower"
    return "better", "worse"


# ---- one verdict -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """What the repetitions of ``a`` say against those of ``b`` for one metric.

    ``kind``: ``better`` / ``worse`` (a against b, significant after the family's Holm
    correction, and beyond the figure's resolution), ``same`` (no detectable difference; with
    ``below_resolution`` none the recorded steps could show) or ``cannot`` (too few
    repetitions)."""

    metric: str
    n_a: int
    n_b: int
    ratio: float            # geometric mean of a / that of b
    ratio_low: float        # its 95 % interval (Welch, log scale)
    ratio_high: float
    p: float                # two-sided p of "no change"
    p_holm: float           # after Holm's correction over the family
    detectable: float       # smallest change detectable at this n and spread (0.1 = 10 %)
    kind: str = "same"
    se: float = math.nan    # standard error of the log ratio
    df: float = math.nan    # Welch degrees of freedom
    resolution: float = 0.0  # the figure's recorded step, in its unit (0: none known)
    below_resolution: bool = False  # the difference is within what the steps can show

    @property
    def change_pct(self) -> float:
        """Signed change of a against b, in % of b."""
        return 100.0 * (self.ratio - 1.0)

    @property
    def better_pct(self) -> float:
        """How much better a is, in % (negative: worse), as the metric's direction says."""
        return self.change_pct if higher_is_better(self.metric) else -self.change_pct

    def interval_pct(self) -> tuple[float, float]:
        """The 95 % interval of :attr:`better_pct`, low first."""
        lo, hi = 100.0 * (self.ratio_low - 1), 100.0 * (self.ratio_high - 1)
        return (lo, hi) if higher_is_better(self.metric) else (-hi, -lo)

    def text(self) -> str:
        """'faster by 12.1 % [4.0 – 19.8 %]', 'no detectable difference at this sample size
        (smallest detectable ≈ 14 %)', 'no verdict: below the figure's resolution (steps of
        1, smallest detectable ≈ 22 %)', 'cannot judge (n=1)'."""
        if self.kind == "cannot":
            return f"cannot judge (n={min(self.n_a, self.n_b)})"
        d = self.detectable
        det = ("unknown" if not math.isfinite(d) else f"≈ {100 * d:.0f} %" if d < 1
               else f"≈ a factor {1 + d:.1f}")
        if self.below_resolution and self.resolution == 0:
            return "no verdict: the repetitions do not vary and the figure's step is unknown"
        if self.below_resolution:
            return (f"no verdict: below the figure's resolution (steps of {self.resolution:g}, "
                    f"smallest detectable {det})")
        if self.kind == "same":
            return f"no detectable difference at this sample size (smallest detectable {det})"
        good, bad = _words(self.metric)
        lo, hi = self.interval_pct()
        if self.kind == "better":
            return f"{good} by {self.better_pct:.1f} % [{lo:.1f} – {hi:.1f} %]"
        return f"{bad} by {-self.better_pct:.1f} % [{-hi:.1f} – {-lo:.1f} %]"


def _finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def resolution(values: Iterable[float | None]) -> float:
    """The step the values were recorded in: the largest power of ten (1e-12 .. 1e15) of which
    every nonzero value is a whole multiple, 0.0 when there is none (a continuous figure).
    An upper bound of the tool's resolution: three values all multiples of 10 read as 10."""
    vals = [abs(v) for v in _finite(values) if v != 0]
    if not vals:
        return 0.0
    for k in range(15, -13, -1):
        q = 10.0 ** k
        if all(v >= q and abs(v / q - round(v / q)) <= 1e-6 for v in vals):
            return q
    return 0.0


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def judge_one(a: Iterable[float | None], b: Iterable[float | None], metric: str,
              step: float | None = None) -> Verdict:
    """The verdict of one comparison before any family correction (``kind`` provisional).

    ``step``: the figure's resolution in its unit (None: :func:`resolution` of the values).
    The 95 % interval is at least the ratio the steps allow, ((a - step/2) / (b + step/2),
    (a + step/2) / (b - step/2)) on the geometric means; when only that widening (or
    repetitions without spread) brings 1 into it, the verdict is "below resolution"."""
    xa, xb = _finite(a), _finite(b)
    if not xa or not xb:
        raise ValueError(f"{metric}: a side has no finite value")
    nan = math.nan
    try:
        lr = welch_log(xa, xb)
    except ValueError:     # fewer than 2 positive values on a side
        mb = summarise(xb).median
        ratio = summarise(xa).median / mb if mb else nan
        return Verdict(metric, len(xa), len(xb), ratio, nan, nan, 1.0, 1.0, nan, "cannot")
    q = resolution(xa + xb) if step is None else step
    # repetitions without spread and no step known: nothing bounds the change, no verdict
    low, high, below, rel_step = lr.low, lr.high, lr.se == 0, 0.0
    if q > 0:
        ga, gb = _geomean([v for v in xa if v > 0]), _geomean([v for v in xb if v > 0])
        q_low = (ga - q / 2) / (gb + q / 2)
        q_high = (ga + q / 2) / (gb - q / 2) if gb > q / 2 else math.inf
        low, high = min(low, q_low), max(high, q_high)
        # one step apart puts 1 on the edge; the geometric means' rounding must not decide
        below = low <= 1.0 + 1e-9 and high >= 1.0 - 1e-9 and \
            (lr.se == 0 or not lr.low <= 1.0 <= lr.high)
        rel_step = 2 * q / gb      # a verdict needs the means more than one step apart
    detectable = detectable_change(lr.se, lr.df)
    return Verdict(metric, len(xa), len(xb), lr.ratio, low, high, lr.p, lr.p,
                   max(rel_step, detectable) if below else detectable,
                   se=lr.se, df=lr.df, resolution=q, below_resolution=below)


def finish(verdicts: Sequence[Verdict], alpha: float = ALPHA) -> list[Verdict]:
    """Holm's correction over one family of comparisons, then each verdict's kind; the
    detectable change is quoted at the family's strictest level (alpha / family size)."""
    judged = [i for i, v in enumerate(verdicts) if v.kind != "cannot"]
    adjusted = holm([verdicts[i].p for i in judged])
    out = list(verdicts)
    for i, p_adj in zip(judged, adjusted):
        v = verdicts[i]
        kind = "same"
        if p_adj < alpha and math.isfinite(v.ratio) and v.ratio != 1.0 and \
                not v.below_resolution:
            kind = "better" if v.better_pct > 0 else "worse"
        detectable = detectable_change(v.se, v.df, alpha / len(judged))
        if v.below_resolution:     # a step of the figure is the least it can show
            detectable = max(detectable, v.detectable)
        out[i] = replace(v, p_holm=p_adj, kind=kind, detectable=detectable)
    return out


def judge(pairs: Sequence[tuple[Iterable[float | None], Iterable[float | None], str]],
          alpha: float = ALPHA) -> list[Verdict]:
    """Verdicts of a family of comparisons ``(a values, b values, metric)``, Holm-corrected
    together."""
    return finish([judge_one(a, b, m) for a, b, m in pairs], alpha)


# ---- the baseline gate -----------------------------------------------------------------------

@dataclass(frozen=True)
class Threshold:
    """Fail a figure whose metric matches ``metric`` (``*``: every metric) when its verdict is
    worse and it is worse by more than ``pct`` %. With ``virt``, only figures of that row kind
    (their virtualisation: ``tcg-icount`` for instruction counts, ``none`` for the host)."""

    metric: str
    pct: float
    virt: str | None = None

    def matches(self, metric: str, virt: str | None = None) -> bool:
        """``latency_p99`` matches ``tcp_oneway_latency_p99_us`` (whole ``_`` tokens, in
        order) but not ``latency_p999_us``; a threshold for one row kind matches only
        figures of that ``virt``."""
        if self.virt is not None and virt != self.virt:
            return False
        if self.metric == "*":
            return True
        want, have = tokens(self.metric), tokens(metric)
        return any(have[i:i + len(want)] == want for i in range(len(have) - len(want) + 1))

    def applies(self, key: Sequence[Any]) -> bool:
        """Whether this threshold covers the figure ``key`` (a :data:`KEY` tuple)."""
        k = dict(zip(KEY, key))
        return self.matches(str(k["metric"]), str(k["virt"]))

    @property
    def specificity(self) -> tuple[bool, int]:
        """A row kind's threshold before one for every kind, then the longer metric."""
        return self.virt is not None, 0 if self.metric == "*" else len(tokens(self.metric))

    def worse_pct(self, verdict: Verdict) -> float:
        """How much worse the current run is, in % of the baseline (negative: better)."""
        return -verdict.better_pct

    def fails(self, verdict: Verdict) -> bool:
        """True when the figure regressed beyond the threshold and beyond the noise (the
        test, Holm-corrected); a side too small to judge never fails."""
        return verdict.kind == "worse" and self.worse_pct(verdict) > self.pct


def threshold_for(key: Sequence[Any], thresholds: Sequence[Threshold]) -> Threshold | None:
    """The one threshold that judges figure ``key``: the most specific that applies
    (:attr:`Threshold.specificity`), the first given among equals; None if none applies."""
    mine = [t for t in thresholds if t.applies(key)]
    return max(mine, key=lambda t: t.specificity) if mine else None


def parse_fail_on(spec: str) -> list[Threshold]:
    """``"throughput:5%,latency_p99:10%,*@tcg-icount:2%"`` -> thresholds (``@KIND``: only
    figures of that virtualisation, ``*``: every metric); FailOnError names the bad item."""
    out: list[Threshold] = []
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        m = re.fullmatch(r"(\*|[a-z][a-z0-9_]*)(?:@([a-z0-9][a-z0-9_.-]*))?"
                         r":([0-9]+(?:\.[0-9]+)?)%?", item, re.IGNORECASE)
        if not m:
            raise FailOnError(f"--bench-fail-on: {item!r} is not METRIC:PCT% or "
                              "METRIC@KIND:PCT% (e.g. throughput:5%,latency_p99:10%,"
                              "*@tcg-icount:2%)")
        virt = m.group(2).lower() if m.group(2) else None
        out.append(Threshold(m.group(1).lower(), float(m.group(3)), virt))
    return out


@dataclass(frozen=True)
class Delta:
    """One figure in both runs, with the verdict of this run against the baseline."""

    key: tuple[Any, ...]
    current: Summary
    baseline: Summary
    verdict: Verdict
    failed: tuple[Threshold, ...]  # the threshold judging this figure, if it breaks it

    @property
    def metric(self) -> str:
        return str(self.key[KEY.index("metric")])

    @property
    def change_pct(self) -> float:
        """Signed change (ratio of geometric means), % of the baseline."""
        return self.verdict.change_pct

    @property
    def noise(self) -> bool:
        """No detectable difference (or too few repetitions to tell)."""
        return self.verdict.kind in ("same", "cannot")

    def label(self) -> str:
        k = dict(zip(KEY, self.key))
        dp = " ".join(str(p) for p in (k["datapath"], k["mode"], k["flag"]) if p)
        return f"{dp} {k['family']} {k['direction']} x{k['streams']} {k['metric']}"


def groups(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], list[float]]:
    """Measurement values grouped by :data:`KEY` (error rows and missing values skipped)."""
    out: dict[tuple[Any, ...], list[float]] = {}
    for r in rows:
        if r.get("error") or r.get("value") is None or not math.isfinite(float(r["value"])):
            continue
        key = tuple("" if r.get(k) is None else r.get(k) for k in KEY)
        out.setdefault(key, []).append(float(r["value"]))
    return out


def summaries(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[Any, ...], Summary]:
    """Group measurement rows by :data:`KEY` and summarise the values (error rows skipped)."""
    return {k: summarise(v) for k, v in groups(rows).items()}


def steps(*runs: Mapping[tuple[Any, ...], list[float]]) -> dict[tuple[str, str], float]:
    """The resolution of each metric (and unit), from all its values in the given
    :func:`groups`: one step for the figure in every datapath and run."""
    pooled: dict[tuple[str, str], list[float]] = {}
    metric, unit = KEY.index("metric"), KEY.index("unit")
    for run in runs:
        for key, values in run.items():
            pooled.setdefault((str(key[metric]), str(key[unit])), []).extend(values)
    return {k: resolution(v) for k, v in pooled.items()}


def compare(current_rows: Iterable[Mapping[str, Any]], baseline_rows: Iterable[Mapping[str, Any]],
            thresholds: Sequence[Threshold] = ()) -> list[Delta]:
    """Per-figure verdicts for the figures present in both runs, in the current run's order.
    Each figure is judged by at most one threshold (:func:`threshold_for`). The figures a
    threshold gates form one Holm family (the fewer, the more power), the others another;
    without thresholds all figures are one family."""
    cur, base = groups(current_rows), groups(baseline_rows)
    keys = [k for k in cur if k in base]
    metric, unit = KEY.index("metric"), KEY.index("unit")
    step = steps(cur, base)
    rule = {k: threshold_for(k, thresholds) for k in keys}
    gated = [k for k in keys if rule[k] is not None]
    verdicts: dict[tuple[Any, ...], Verdict] = {}
    for family in (gated, [k for k in keys if k not in gated]):
        judged = finish([judge_one(cur[k], base[k], str(k[metric]),
                                   step[str(k[metric]), str(k[unit])]) for k in family])
        verdicts.update(zip(family, judged))
    out = []
    for key in keys:
        v, t = verdicts[key], rule[key]
        failed = (t,) if t is not None and t.fails(v) else ()
        out.append(Delta(key, summarise(cur[key]), summarise(base[key]), v, failed))
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


__all__ = ["ALPHA", "KEY", "Delta", "FailOnError", "Threshold", "Verdict", "compare", "finish",
           "groups", "higher_is_better", "judge", "judge_one", "machine_mismatch", "overlap",
           "parse_fail_on", "resolution", "steps", "summaries", "threshold_for"]
