"""Baseline comparison: thresholds, noise awareness, matching, mismatch warnings."""

from __future__ import annotations

import random

import pytest

from linklab.bench.compare import (
    KEY,
    FailOnError,
    Threshold,
    Verdict,
    compare,
    higher_is_better,
    judge,
    judge_one,
    machine_mismatch,
    parse_fail_on,
    resolution,
    threshold_for,
)

BASE_THR = [10.0e9, 10.1e9, 9.9e9, 10.0e9, 10.05e9]


def one(cur: list[float], base: list[float], metric: str) -> Verdict:
    return judge([(cur, base, metric)])[0]


def test_parse_fail_on() -> None:
    assert parse_fail_on("throughput:5%,latency_p99:10%") == [
        Threshold("throughput", 5.0), Threshold("latency_p99", 10.0)]
    assert parse_fail_on("cpu_s_per_gbit:2.5") == [Threshold("cpu_s_per_gbit", 2.5)]
    assert parse_fail_on("") == []
    with pytest.raises(FailOnError, match="'throughput=5'"):
        parse_fail_on("throughput=5")
    with pytest.raises(FailOnError, match="'latency:x%'"):
        parse_fail_on("throughput:5%,latency:x%")


def test_matching_is_by_whole_tokens() -> None:
    t = Threshold("latency_p99", 10)
    assert t.matches("tcp_oneway_latency_p99_us")
    assert not t.matches("tcp_oneway_latency_p999_us")
    assert Threshold("throughput", 5).matches("throughput_bps")
    assert not Threshold("throughput", 5).matches("udp_goodput_bps")


def test_direction_of_better() -> None:
    assert higher_is_better("throughput_bps") and higher_is_better("udp_goodput_bps")
    assert not higher_is_better("tcp_oneway_latency_p99_us")
    assert not higher_is_better("cpu_s_per_gbit") and not higher_is_better("udp_loss_pct")


def test_throughput_drop_beyond_threshold_and_noise_fails() -> None:
    v = one([8.0e9, 8.1e9, 7.9e9, 8.0e9, 8.05e9], BASE_THR, "throughput_bps")
    assert v.kind == "worse" and v.change_pct == pytest.approx(-20.0, abs=0.3)
    assert Threshold("throughput", 5).fails(v)
    assert not Threshold("throughput", 25).fails(v)
    assert v.text() == "slower by 20.0 % [19.0 – 21.0 %]"


def test_an_improvement_never_fails() -> None:
    v = one([12.0e9, 12.1e9, 11.9e9], BASE_THR, "throughput_bps")
    assert v.kind == "better" and not Threshold("throughput", 5).fails(v)
    lat = one([50.0, 51.0, 49.0], [100.0, 101.0, 99.0], "tcp_oneway_latency_p99_us")
    assert lat.kind == "better" and lat.text().startswith("faster by 50.")
    assert not Threshold("latency_p99", 10).fails(lat)


def test_latency_increase_fails_only_when_the_test_says_so() -> None:
    base = [100.0, 101.0, 99.0, 100.0, 100.5]
    clear = one([130.0, 131.0, 129.0, 130.0, 130.5], base, "tcp_oneway_latency_p99_us")
    noisy = one([60.0, 200.0, 130.0, 90.0, 170.0], base, "tcp_oneway_latency_p99_us")
    t = Threshold("latency_p99", 10)
    assert t.fails(clear) and clear.text().startswith("slower by 30.")
    assert noisy.kind == "same" and not t.fails(noisy)
    assert noisy.text().startswith("no detectable difference at this sample size (smallest "
                                   "detectable ≈ ")
    assert noisy.detectable > clear.detectable > 0
    hopeless = one([1.0, 9.0, 3.0], [2.0, 8.0, 1.0], "throughput_bps")
    assert hopeless.kind == "same" and "smallest detectable ≈ a factor " in hopeless.text()


def test_one_repetition_cannot_be_judged_never_regressed() -> None:
    v = one([5e9], BASE_THR, "throughput_bps")
    assert v.kind == "cannot" and v.text() == "cannot judge (n=1)"
    assert not Threshold("throughput", 5).fails(v)
    assert one(BASE_THR, [10e9], "throughput_bps").text() == "cannot judge (n=1)"


def test_holm_family_needs_stronger_evidence() -> None:
    """Alone, a modest noisy drop is detected; among 50 unchanged figures it is not, and the
    detectable change quoted grows with the family."""
    base = [100.0, 104.0, 96.0, 101.0, 99.0]
    drop = [92.0, 95.0, 89.0, 93.0, 91.0]
    alone = one(drop, base, "throughput_bps")
    assert alone.kind == "worse" and alone.p < 0.05
    family = judge([(drop, base, "throughput_bps")] + [(base, base, "throughput_bps")] * 50)
    assert family[0].kind == "same" and family[0].p_holm > 0.05 == pytest.approx(0.05)
    assert family[0].detectable > alone.detectable
    assert all(v.kind == "same" for v in family[1:])


def test_false_alarms_stay_near_alpha_on_identical_distributions() -> None:
    """A/A on simulated log-normal noise (CV 15 %): about 5 % of single comparisons at
    5 repetitions each come out 'different', no more."""
    rng = random.Random(7)
    trials = 600
    alarms = sum(one([rng.lognormvariate(0, 0.15) for _ in range(5)],
                     [rng.lognormvariate(0, 0.15) for _ in range(5)],
                     "throughput_bps").kind != "same" for _ in range(trials))
    assert 0.015 < alarms / trials < 0.085


def row(metric: str, value: float, rep: int, **kw: object) -> dict:
    base = {"virt": "none", "kernel": "6.18", "datapath": "veth", "mode": "", "flag": "",
            "family": "v4", "direction": "forward", "streams": 1, "metric": metric,
            "unit": "bit/s", "value": value, "repetition": rep, "error": ""}
    return base | kw


def test_compare_matches_figures_and_flags_regressions() -> None:
    baseline = [row("throughput_bps", v, i) for i, v in enumerate([10e9, 10.1e9, 9.9e9], 1)]
    baseline += [row("throughput_bps", v, i, virt="tcg") for i, v in enumerate([1e9, 1e9], 1)]
    current = [row("throughput_bps", v, i) for i, v in enumerate([5e9, 5.1e9, 4.9e9], 1)]
    current += [row("throughput_bps", None, 4, error="iperf3: boom")]
    current += [row("throughput_bps", v, i, datapath="bridge") for i, v in enumerate([3e9], 1)]
    deltas = compare(current, baseline, [Threshold("throughput", 5)])
    assert len(deltas) == 1                      # bridge absent from the baseline; tcg apart
    (d,) = deltas
    assert d.current.n == 3                      # the error row is not a figure
    assert d.change_pct == pytest.approx(-50.0, abs=0.01)
    assert d.failed == (Threshold("throughput", 5),) and not d.noise
    assert "veth v4 forward x1 throughput_bps" in d.label()
    assert compare(current, baseline, [])[0].failed == ()


def test_machine_mismatch_names_what_differs() -> None:
    cur = {"kernel": "6.18", "cpu_model": "Xeon", "cores": 2, "virt": "none"}
    assert machine_mismatch(cur, dict(cur)) == []
    out = machine_mismatch(cur, cur | {"kernel": "6.12", "cores": 4})
    assert out == ["kernel differs: baseline 6.12, this run 6.18",
                   "cores differs: baseline 4, this run 2"]
    assert machine_mismatch(cur, {})[0].startswith("kernel of the baseline is unknown")


# ---- resolution: no verdict with a zero-width interval -----------------------------------------

LAT = "icmp_rtt_latency_p50_us"


def test_three_equal_repetitions_a_step_apart_are_below_resolution() -> None:
    """ICMP p50 recorded in whole µs, 8 against 9 three times each: not 'faster by 11.1 %
    [11.1 – 11.1 %]' (what a zero-spread Welch test says) but no verdict."""
    (v,) = judge([([8.0] * 3, [9.0] * 3, LAT)])      # faster by (8 ± 0.5) / (9 ∓ 0.5): 0..21 %
    assert v.kind == "same" and v.below_resolution and v.resolution == 1.0
    assert v.text() == ("no verdict: below the figure's resolution (steps of 1, smallest "
                        "detectable ≈ 22 %)")
    lo, hi = v.interval_pct()
    assert lo == pytest.approx(0, abs=1e-9) and hi == pytest.approx(21.05, abs=0.01)
    assert not Threshold("*", 2).fails(v)
    assert not Threshold("*", 2).fails(one([9.0] * 3, [8.0] * 3, LAT))


def test_equal_repetitions_several_steps_apart_get_a_verdict_with_a_real_interval() -> None:
    v = one([12.0] * 3, [9.0] * 3, LAT)
    assert v.kind == "worse" and not v.below_resolution
    assert v.text() == "slower by 33.3 % [21.1 – 47.1 %]"      # (12 ± 0.5) / (9 ∓ 0.5)
    assert Threshold("*", 2).fails(v)


def test_identical_repetitions_claim_no_detectable_zero() -> None:
    v = one([99.0] * 3, [99.0] * 3, "iperf_cpu_host_pct")
    assert v.kind == "same" and v.below_resolution and v.ratio_low < 1.0 < v.ratio_high
    assert v.text() == ("no verdict: below the figure's resolution (steps of 1, smallest "
                        "detectable ≈ 2 %)")


def test_repetitions_without_spread_and_without_a_step_get_no_verdict() -> None:
    v = one([3.141592653589793] * 3, [2.718281828459045] * 3, LAT)
    assert v.resolution == 0.0 and v.below_resolution and v.kind == "same"
    assert v.text() == "no verdict: the repetitions do not vary and the figure's step is unknown"


def test_a_given_step_overrides_the_one_read_from_the_values() -> None:
    fine = judge_one([8.0] * 3, [9.0] * 3, LAT, step=0.001)     # the tool's real step
    assert not fine.below_resolution and fine.ratio_low < fine.ratio < fine.ratio_high
    assert judge_one([8.0] * 3, [9.0] * 3, LAT, step=5.0).below_resolution


def test_a_spread_wider_than_the_step_keeps_the_welch_interval() -> None:
    a, b = [8.0, 12.0, 9.0, 11.0, 10.0], [13.0, 15.0, 14.0, 16.0, 12.0]
    v = one(a, b, LAT)
    assert not v.below_resolution and v.kind == "better"
    assert judge_one(a, b, LAT, step=0.0).ratio_low == v.ratio_low


def test_resolution_is_the_largest_power_of_ten_every_value_is_a_multiple_of() -> None:
    assert resolution([9.0, 8.0, None]) == 1.0
    assert resolution([38570000000.0, 38083000000.0]) == 1e6
    assert resolution([0.048865, 0.055736]) == 1e-6
    assert resolution([69.612, 99.0, 0.0]) == 1e-3
    assert resolution([0.1 + 0.2]) == 0.1
    assert resolution([3.141592653589793]) == 0.0 and resolution([]) == 0.0


# ---- thresholds per row kind ------------------------------------------------------------------

def key(metric: str, virt: str = "none") -> tuple:
    return tuple({"virt": virt, "metric": metric}.get(k, "") for k in KEY)


def test_a_threshold_for_one_row_kind() -> None:
    rules = parse_fail_on("throughput:5%,latency_p99:10%,*@tcg-icount:2%")
    assert rules[2] == Threshold("*", 2.0, "tcg-icount")
    assert threshold_for(key("throughput_bps"), rules) == Threshold("throughput", 5.0)
    assert threshold_for(key("throughput_bps", "tcg-icount"), rules) == rules[2]
    assert threshold_for(key("udp_loss_pct"), rules) is None
    assert threshold_for(key("udp_loss_pct", "tcg-icount"), rules) == rules[2]
    loose = parse_fail_on("throughput:5%,throughput@tcg:20%")
    assert threshold_for(key("throughput_bps", "tcg"), loose) == Threshold("throughput", 20, "tcg")
    assert threshold_for(key("tcp_oneway_latency_p99_us"),
                         parse_fail_on("latency:5%,latency_p99:10%")).pct == 10
    with pytest.raises(FailOnError, match="'throughput@:2%' is not METRIC:PCT% or METRIC@KIND"):
        parse_fail_on("throughput@:2%")


def test_instruction_rows_fail_at_their_own_threshold() -> None:
    """3 % slower everywhere: the host passes its 5 %, the instruction rows fail their 2 %."""
    base_vals = [1000.0, 1001.0, 999.0, 1000.5, 999.5]
    baseline, current = [], []
    for virt in ("none", "tcg-icount"):
        baseline += [row("throughput_bps", v * 1e6, i, virt=virt)
                     for i, v in enumerate(base_vals, 1)]
        current += [row("throughput_bps", v * 0.97e6, i, virt=virt)
                    for i, v in enumerate(base_vals, 1)]
    rules = [Threshold("throughput", 5.0), Threshold("*", 2.0, virt="tcg-icount")]
    host, icount = compare(current, baseline, rules)
    assert host.verdict.kind == icount.verdict.kind == "worse"
    assert host.failed == () and icount.failed == (Threshold("*", 2.0, "tcg-icount"),)
