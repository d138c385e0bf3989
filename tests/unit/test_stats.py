"""Statistics of repetitions: median, 95 % t confidence interval, CV."""

from __future__ import annotations

import math
import statistics

import pytest
import scipy.stats
from hypothesis import assume, given
from hypothesis import strategies as st

from linklab.bench.stats import (
    detectable_change,
    holm,
    overlap,
    summarise,
    t975,
    t_quantile,
    t_two_sided_p,
    welch_log,
)


def test_t_quantiles_match_the_printed_table_and_tend_to_normal() -> None:
    assert t975(1) == pytest.approx(12.706, abs=5e-4)
    assert t975(4) == pytest.approx(2.776, abs=5e-4)
    assert t975(30) == pytest.approx(2.042, abs=5e-4)
    assert t975(45) == pytest.approx(2.014, abs=5e-4)
    assert t975(10_000) == pytest.approx(1.960, abs=5e-4)
    with pytest.raises(ValueError):
        t975(0)


def test_summary_of_five_values() -> None:
    vals = [10.0, 12.0, 11.0, 9.0, 13.0]
    s = summarise(vals)
    assert s.n == 5 and s.median == 11.0 and s.mean == 11.0
    sd = statistics.stdev(vals)
    half = 2.7764451051977987 * sd / math.sqrt(5)     # t_{0.975, 4}
    assert s.ci_low == pytest.approx(11.0 - half) and s.ci_high == pytest.approx(11.0 + half)
    assert s.cv == pytest.approx(sd / 11.0)
    assert s.ci_half == pytest.approx(half)


def test_median_is_robust_to_one_outlier() -> None:
    s = summarise([10.0, 10.0, 10.0, 10.0, 1000.0])
    assert s.median == 10.0 and s.mean == 208.0


def test_none_and_nan_are_ignored_and_one_value_has_no_spread() -> None:
    s = summarise([None, float("nan"), 4.0])
    assert (s.n, s.median, s.ci_low, s.ci_high) == (1, 4.0, 4.0, 4.0)
    assert math.isnan(s.cv)


def test_no_values_is_an_error() -> None:
    with pytest.raises(ValueError, match="no finite values"):
        summarise([None, float("nan")])


def test_zero_mean_has_undefined_cv() -> None:
    assert math.isnan(summarise([-1.0, 1.0]).cv)


def test_overlap() -> None:
    a = summarise([10.0, 10.5, 9.5])
    b = summarise([10.2, 10.7, 9.7])
    c = summarise([20.0, 20.5, 19.5])
    assert overlap(a, b) and overlap(b, a)
    assert not overlap(a, c) and not overlap(c, a)


def test_t_distribution_tail_and_quantiles() -> None:
    assert t_two_sided_p(2.776, 4) == pytest.approx(0.05, abs=2e-4)
    assert t_two_sided_p(12.706, 1) == pytest.approx(0.05, abs=2e-4)
    assert t_two_sided_p(0.0, 7) == pytest.approx(1.0)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    assert t_quantile(0.95, 1e6) == pytest.approx(1.645, abs=1e-3)


def test_holm_adjusts_in_order_and_stays_monotone() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == [0.2] and holm([]) == []
    assert holm([0.5, 0.5, 0.5]) == [1.0, 1.0, 1.0]


def test_welch_on_logs_gives_the_ratio_and_its_interval() -> None:
    a = [10.0, 11.0, 12.0, 10.5, 11.2]
    lr = welch_log(a, [v / 1.2 for v in a])           # exactly 20 % apart, same spread
    assert lr.ratio == pytest.approx(1.2) and 1.0 < lr.low < 1.2 < lr.high and lr.p < 0.01
    same = welch_log(a, list(reversed(a)))
    assert same.ratio == pytest.approx(1.0) and same.p == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        welch_log([1.0], a)
    assert detectable_change(lr.se, lr.df) > 0
    assert detectable_change(lr.se / 2, lr.df) < detectable_change(lr.se, lr.df)


repetitions = st.lists(st.floats(0.5, 2.0e3), min_size=2, max_size=12)


@pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
@given(repetitions, repetitions)
def test_welch_on_logs_is_scipys_welch_test_of_the_logs(a: list[float], b: list[float]) -> None:
    la, lb = [math.log(v) for v in a], [math.log(v) for v in b]
    assume(statistics.stdev(la) > 1e-6 or statistics.stdev(lb) > 1e-6)
    lr = welch_log(a, b)
    ref = scipy.stats.ttest_ind(la, lb, equal_var=False)
    assert lr.p == pytest.approx(ref.pvalue, rel=1e-6, abs=1e-12)
    assert lr.df == pytest.approx(ref.df, rel=1e-9)
    assert lr.low <= lr.ratio <= lr.high
    assert (lr.p < 0.05) == (not lr.low <= 1.0 <= lr.high) or \
        min(abs(lr.low - 1), abs(lr.high - 1)) < 1e-3      # the df rounding at the edge
