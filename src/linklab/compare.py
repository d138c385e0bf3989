"""Moved to :mod:`linklab.bench.compare`; this name stays for the scripts that import it."""

from linklab.bench.compare import (
    ALPHA,
    HIGHER_IS_BETTER,
    KEY,
    Delta,
    FailOnError,
    Threshold,
    Verdict,
    compare,
    finish,
    groups,
    higher_is_better,
    judge,
    judge_one,
    machine_mismatch,
    overlap,
    parse_fail_on,
    resolution,
    steps,
    summaries,
    threshold_for,
    tokens,
)

__all__ = ["ALPHA", "HIGHER_IS_BETTER", "KEY", "Delta", "FailOnError", "Threshold", "Verdict",
           "compare", "finish", "groups", "higher_is_better", "judge", "judge_one",
           "machine_mismatch", "overlap", "parse_fail_on", "resolution", "steps", "summaries",
           "threshold_for", "tokens"]
