"""The report's "Which datapath?" rows: a verdict only when the bench's test separates them, in the
right direction for each metric, and a plain "not measured" with its reason otherwise."""

from __future__ import annotations

from linklab.report.which import FIGURES, REMOTE_FLAG, build, evidence

HOST = ("6.18.0", "none")
THROUGHPUT, _, LATENCY, _ = FIGURES


def rows(datapath: str, metric: str, values: list[float], flag: str = "",
         direction: str = "forward") -> list[dict]:
    return [{"datapath": datapath, "mode": "", "flag": flag, "direction": direction,
             "streams": 1, "metric": metric, "value": v, "error": None, "repetition": i,
             "kernel": HOST[0], "virt": HOST[1]} for i, v in enumerate(values)]


def claim2(bench: list[dict]) -> dict[str, tuple[str, str]]:
    return {e.measure: (e.verdict, e.detail) for e in evidence(bench, [], HOST) if e.claim == 2}


def test_faster_with_separate_intervals_supports_and_slower_contradicts() -> None:
    fast = rows("veth-bpf", "throughput_bps", [10e9, 10.1e9, 9.9e9, 10e9])
    slow = rows("veth", "throughput_bps", [5e9, 5.1e9, 4.9e9, 5e9])
    got = claim2(fast + slow)
    verdict, detail = got["TCP throughput, 1 stream, container ↔ container: veth-bpf vs veth"]
    assert verdict == "supports" and "faster by 100.0 %" in detail
    lat_bpf = rows("veth-bpf", LATENCY[3], [30, 31, 29], direction="pingpong")
    lat_veth = rows("veth", LATENCY[3], [10, 11, 9], direction="pingpong")
    got = claim2(lat_bpf + lat_veth)
    assert got["TCP one-way latency p99, container ↔ container: veth-bpf vs veth"][0] == \
        "contradicts"                       # higher latency is worse


def test_overlapping_intervals_are_noise_and_missing_rows_are_said() -> None:
    a = rows("veth-bpf", "throughput_bps", [5e9, 9e9, 3e9], flag=REMOTE_FLAG)
    b = rows("veth", "throughput_bps", [6e9, 4e9, 8e9], flag=REMOTE_FLAG)
    got = claim2(a + b)
    assert got["TCP throughput, 1 stream, container ↔ remote: veth-bpf vs veth"][0] == \
        "within noise"
    verdict, detail = got["TCP throughput, 1 stream, container ↔ container: veth-bpf vs veth"]
    assert verdict == "not measured" and "no throughput_bps rows" in detail


def test_claim_1_says_this_machine_cannot_measure_it_and_counts_vm_cells() -> None:
    conn = [{"kind": "ipvlan", "outcome": o, "kernel": "6.12", "virt": "tcg"}
            for o in ("passed", "passed", "failed")]
    got = [e for e in evidence([], conn, HOST) if e.claim == 1]
    assert got[0].verdict == "not measured" and "lacks ipvlan" in got[0].detail
    vm = next(e for e in got if "connectivity" in e.measure)
    assert vm.verdict == "failed" and vm.detail.startswith("2 cells as expected, 1 failed")



def test_the_section_holds_both_claims_with_their_rows() -> None:
    class Saved:   # the two tables and the meta a loaded results directory has
        tables = {"bench": None, "connectivity": None}
        meta = {"kernel": HOST[0], "virt": HOST[1]}

    data = build(Saved())
    assert [c for c, _, _ in data["claims"]] == [1, 2]
    assert all(rows for _, _, rows in data["claims"])   # "not measured" rows say why
    # each claim says whose it is (a reader has never heard of the notes linklab began from)
    assert all(text.startswith("Cilium's documentation claims") and "seed" not in text
               for _, text, _ in data["claims"])
