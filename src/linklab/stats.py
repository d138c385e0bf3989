"""Statistics of repeated measurements: median, 95 % confidence interval, coefficient of
variation. Small on purpose (no SciPy): the t quantiles are tabulated."""

from __future__ import annotations

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
