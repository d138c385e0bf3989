"""Statistics of repeated measurements: median, 95 % confidence interval, coefficient of
variation. Small on purpose (no SciPy): the t quantiles are tabulated."""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

# two-sided 95 % Student t quantiles (t_{0.975, df}), df = 1..30, then selected df
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
_T975_LARGE = ((40, 2.021), (60, 2.000), (120, 1.980))
Z975 = 1.960


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (conservative:
    between tabulated values the smaller df is used)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    value = _T975[-1]
    for limit, t in _T975_LARGE:
        if df >= limit:
            value = t
    return value if df < 1000 else Z975


@dataclass(frozen=True)
class Summary:
    """n values summarised. ``ci_low``/``ci_high``: 95 % t-interval of the mean; with one
    value it collapses onto that value (no spread is known, none is invented)."""

    n: int
    median: float
    mean: float
    stdev: float
    ci_low: float
    ci_high: float
    cv: float          # stdev / mean, NaN when undefined

    @property
    def ci_half(self) -> float:
        return (self.ci_high - self.ci_low) / 2


def summarise(values: Iterable[float | None]) -> Summary:
    """Summary of the finite values (None and NaN are ignored); ValueError if none is left."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        raise ValueError("no finite values to summarise")
    n = len(vals)
    mean = statistics.fmean(vals)
    med = statistics.median(vals)
    if n == 1:
        return Summary(1, med, mean, 0.0, mean, mean, math.nan)
    sd = statistics.stdev(vals)
    half = t975(n - 1) * sd / math.sqrt(n)
    cv = sd / abs(mean) if mean else math.nan
    return Summary(n, med, mean, sd, mean - half, mean + half, cv)


def overlap(a: Summary, b: Summary) -> bool:
    """True when the two confidence intervals share at least one point."""
    return a.ci_low <= b.ci_high and b.ci_low <= a.ci_high


# ---------------------------------------------------------------------------------------------
# comparing two sets of repetitions (rank test, ratio of medians, family-wise correction)

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                   -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-12:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` (real) degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _betai(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile (p > 0.5) of Student's t, by bisection on :func:`t_two_sided_p`
    (df rounded to 0.01: the quantile moves by far less than that between)."""
    return _t_quantile(p, round(df, 2))


@functools.lru_cache(maxsize=4096)
def _t_quantile(p: float, df: float) -> float:
    target = 2 * (1 - p)
    lo, hi = 0.0, 1e3
    for _ in range(64):
        mid = (lo + hi) / 2
        if t_two_sided_p(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class LogRatio:
    """Welch's t-test on log values: ``ratio`` = geometric mean of a / that of b, with its
    95 % interval and the two-sided p of "no change"."""

    ratio: float
    low: float
    high: float
    p: float
    df: float
    se: float          # standard error of the log ratio


def welch_log(a: Iterable[float], b: Iterable[float], level: float = 0.95) -> LogRatio:
    """Welch's unequal-variance t-test of the log values (multiplicative changes, as
    throughput and latency change); ValueError when a side has < 2 positive values."""
    la = [math.log(v) for v in a if v > 0]
    lb = [math.log(v) for v in b if v > 0]
    if len(la) < 2 or len(lb) < 2:
        raise ValueError("each side needs at least 2 positive values")
    va, vb = statistics.variance(la) / len(la), statistics.variance(lb) / len(lb)
    diff = statistics.fmean(la) - statistics.fmean(lb)
    se = math.sqrt(va + vb)
    if se == 0:
        p = 1.0 if diff == 0 else 0.0
        return LogRatio(math.exp(diff), math.exp(diff), math.exp(diff), p, math.inf, 0.0)
    df = (va + vb) ** 2 / (va ** 2 / (len(la) - 1) + vb ** 2 / (len(lb) - 1))
    half = t_quantile(1 - (1 - level) / 2, df) * se
    return LogRatio(math.exp(diff), math.exp(diff - half), math.exp(diff + half),
                    t_two_sided_p(diff / se, df), df, se)


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order): family-wise error <= alpha."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out = [1.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        out[i] = running
    return out


def detectable_change(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest multiplicative change (0.1 = 10 %) a two-sided Welch test at level
    ``alpha`` detects with probability ``power``, given the standard error of the log ratio."""
    if not math.isfinite(se) or se <= 0 or not df > 0:
        return math.nan if not math.isfinite(se) else 0.0
    return math.exp((t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * se) - 1
