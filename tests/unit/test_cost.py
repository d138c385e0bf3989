"""The cost bench's pieces that need no guest: its commands, rows, the injected cost, the
instruction clock's refusals and the leg's phases on that clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from linklab import vm
from linklab.bench import cost, llcost
from linklab.bench.datapaths import Datapath, datapaths
from linklab.bench.measure import Endpoints
from linklab.bench.tools import ToolFailure
from linklab.model import SHIPPED
from linklab.pytest.vm import PHASES, leg_phases, phase_summary
from tests import REPO

EP = Endpoints(server=None, client=None, server_addr="198.18.254.1")  # type: ignore[arg-type]


def metric(what: str) -> cost.Metric:
    return next(m for m in cost.METRICS if m.what == what)


def test_each_metric_is_a_fixed_amount_of_work_never_a_duration() -> None:
    argvs = {m.what: cost.client_argv(m, EP, "/x/llcost") for m in cost.METRICS}
    assert argvs["bulk"] == ["/x/llcost", "tcp-stream", "198.18.254.1", 5301, cost.BULK_BYTES]
    assert argvs["packet"][:6] == ["/x/llcost", "udp-stream", "198.18.254.1", 5303, 5000, 64]
    assert argvs["rr"][1] == "udp-rr" and argvs["icmp"][1] == "icmp-rr"
    assert argvs["conn"][1:5] == ["tcp-crr", "198.18.254.1", 5304, 400]
    for argv in argvs.values():      # no tool option that paces or times itself
        assert not {"-t", "-i", "-b", "--time"} & {str(a) for a in argv}
    assert argvs["rr"][-2:] == ["--warmup", 200]


def test_rows_say_the_unit_the_path_and_the_clock() -> None:
    dp = Datapath("macvlan-vepa-hairpin", "macvlan", "vepa", "hairpin")
    fig = cost.Figure(metric("rr"), "remote", 27_000_000, 1000)
    row = cost.row(dp, metric("rr"), "remote", 2, fig, None, "6.12.1", cost.ICOUNT_VIRT)
    assert row["flag"] == "hairpin+from-remote" and row["value"] == 27_000
    assert row["unit"] == "instructions/round trip" and row["metric"] == \
        "instructions_per_round_trip"
    assert row["direction"] == "rr" and row["virt"] == "tcg-icount"
    failed = cost.row(dp, metric("conn"), "child", 1, None, "llcost: boom", "k", "tcg-icount")
    assert failed["value"] is None and failed["error"] == "llcost: boom"
    assert failed["flag"] == "hairpin"


def test_the_injected_cost_is_rules_no_packet_matches() -> None:
    text = cost.power_ruleset(3)
    assert text.count("udp dport") == 3 and "hook input" in text and "policy accept" in text
    assert "udp dport 40002 drop" in text
    assert not any(p in text for p in ("5301", "5302", "5303", "5304"))   # never a served port


def test_spread() -> None:
    assert cost.spread_pct([100.0, 101.0, 100.5]) == pytest.approx(1.0)
    assert cost.spread_pct([5.0, 5.0]) == 0.0


def test_every_forwarding_datapath_is_measured() -> None:
    names = {d.name for d in datapaths(SHIPPED)}
    assert {"loopback", "veth-pair", "veth", "bridge", "macvlan-bridge", "ipvlan-l2-bridge",
            "ipvlan-l3-bridge", "ipvlan-l3s-bridge", "ipvlan-l3-vepa", "netkit-l3-bpf",
            "netkit-l2-forward", "veth-bpf", "macvlan-vepa-hairpin"} <= names


@pytest.mark.parametrize("cpus, kvm, fragment", [
    (2, None, "one vCPU per guest: 2 vCPUs"),
    (1, True, "cannot run under KVM"),
])
def test_the_instruction_clock_refuses_what_it_cannot_honour(cpus: int, kvm: bool | None,
                                                            fragment: str) -> None:
    with pytest.raises(vm.VMError, match=fragment):
        vm.check_clock("instructions", cpus, kvm)
    vm.check_clock("wall", cpus, kvm)        # the wall clock takes both


def test_the_pytest_option_refuses_several_vcpus(run_pytest: Callable[..., Any]) -> None:
    res = run_pytest(REPO, "--vm", "--vm-clock=instructions", "--vm-cpus=2", "--collect-only",
                     "bench/test_cost.py")
    assert res.returncode == 4, res.stdout + res.stderr
    assert "--vm-clock instructions" in res.stderr and "one vCPU per guest" in res.stderr


def test_icount_phases_keep_the_guest_clock_apart() -> None:
    outcome = vm.Outcome(0, "6.12", vm.ICOUNT_VIRT, 20.0, 300.0)
    guest = {"import_s": 40.0, "collect_s": 5.0, "cells_s": 500.0}   # virtual seconds
    leg = leg_phases(outcome, guest, host_s=2.0, replay_s=1.0)
    assert leg["guest_s"] == 280.0 and leg["end_s"] is None and leg["cells_s"] is None
    assert leg["guest_virtual_s"] == guest
    summed = sum(leg[k] for k, _ in PHASES if isinstance(leg.get(k), float))
    assert summed == pytest.approx(leg["total_s"])     # one clock: the parts add up
    assert "-" not in phase_summary(leg)


def test_a_burst_in_one_slice_does_not_move_the_figure() -> None:
    quiet = [2_740_000] * 10
    burst = quiet[:4] + [6_900_000] + quiet[5:]       # ~4 M instructions of unrelated work
    line = '{"op": "udp-rr", "count": 2000, "ns": %d, "bytes": 128000, "chunks": %s}'
    a = llcost.parse(line % (sum(quiet), quiet))
    b = llcost.parse(line % (sum(burst), burst))
    assert b.ns > a.ns * 1.1                          # the total sees the burst
    assert a.median_ns == b.median_ns == 27_400_000   # the median slice does not
    plain = llcost.parse('{"op": "tcp-stream", "count": 1, "ns": 99, "bytes": 7}')
    assert plain.median_ns == 99 and plain.chunks == ()
    with pytest.raises(ToolFailure, match="chunks"):
        llcost.parse(line % (1, [1, -2]))
