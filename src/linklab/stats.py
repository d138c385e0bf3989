"""Moved to :mod:`linklab.bench.stats`; this name stays for the scripts that import it."""

from linklab.bench.stats import (
    Z975,
    LogRatio,
    Summary,
    detectable_change,
    holm,
    overlap,
    summarise,
    t975,
    t_quantile,
    t_two_sided_p,
    welch_log,
)

__all__ = ["Z975", "LogRatio", "Summary", "detectable_change", "holm", "overlap", "summarise",
           "t975", "t_quantile", "t_two_sided_p", "welch_log"]
