"""Statistics of repeated measurements: median, 95 % confidence interval, coefficient of
variation, and Welch's t-test on log values; the t distribution is scipy.stats'."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import scipy.stats

Z975 = 1.959963984540054      # scipy.stats.norm.ppf(0.975)


def _t() -> scipy.stats.rv_continuous:
    """scipy.stats.t, imported on first use: scipy.stats costs ~1 s to import here and ~20 s
    in a TCG guest, and every pytest process loads this module through the bench plugin."""
    import scipy.stats

    return scipy.stats.t


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return float(_t().ppf(0.975, df))


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
# comparing two sets of repetitions (Welch on log values, family-wise correction)

def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` (real) degrees of freedom."""
    return float(2 * _t().sf(abs(t), df))


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t, df rounded to 0.01 as the verdicts have always
    quoted it (the exact-df quantile differs by < 1e-3 relative from df 2 on)."""
    return float(_t().ppf(p, round(df, 2)))


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
    # Welch-Satterthwaite df; scipy.stats.ttest_ind(equal_var=False) gives the same p but
    # warns of "catastrophic cancellation" on the near-equal repetitions a bench produces
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


__all__ = ["Z975", "LogRatio", "Summary", "detectable_change", "holm", "overlap", "summarise",
           "t975", "t_quantile", "t_two_sided_p", "welch_log"]
