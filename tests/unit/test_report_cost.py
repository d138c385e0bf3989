"""The report's "Cost per packet" section, from saved instruction-clock rows only: figures and
their verdicts (a 2 % difference is named, repetitions without spread get none), the kernel
against kernel table, the agreement with the host's wall-clock ranking, the "Which datapath?"
claims judged with these figures, and the wall-clock sections unchanged by these rows.

``tests/data/results-cost`` holds rows of a real cost run on 6.12 (a subset) and, FABRICATED
for these tests, a second kernel ``6.1.0-fabricated-scaled`` (the same rows x 1.094, bridge
x 1.081, loopback unchanged) and ``anatomy.fabricated.jsonl`` (a host leg with the host's
datapaths and a two-host bridge, a VM leg on 6.12 with veth, ipvlan and netkit). They are merged
into a copy of ``results-sample`` (host wall-clock rows), as ``make report`` merges legs into one
run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import scipy.stats

from linklab.bench.compare import KEY, parse_fail_on
from linklab.report import cost, which
from linklab.report.aggregate import Rules, load_results
from linklab.report.render import html
from linklab.report.view import build
from tests import DATA

SAMPLE = DATA / "results-sample"
COST = DATA / "results-cost"
K612 = "6.12.118+deb12-amd64"
K61 = "6.1.0-fabricated-scaled"


def merged(tmp_path: Path, kernels: tuple[str, ...] = (K612, K61), anatomy: bool = True) -> Path:
    """results-sample with the cost rows of ``kernels`` (and the anatomy rows) added."""
    run = Path(shutil.copytree(SAMPLE, tmp_path / "20250101T100000Z-cost"))
    for k in kernels:
        for part in COST.glob(f"bench.{k}-*.jsonl"):
            shutil.copy(part, run / part.name)
    if anatomy:
        shutil.copy(COST / "anatomy.fabricated.jsonl", run / "anatomy.fabricated.jsonl")
    meta = json.loads((run / "meta.json").read_text())
    meta["cost"] = json.loads((COST / "meta.json").read_text())["cost"]
    (run / "meta.json").write_text(json.dumps(meta))
    return run


def add_rows(run: Path, rows: list[dict]) -> None:
    with open(run / f"bench.{K612}-tcg-icount-g9-test.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


def like(datapath: str, metric: str, values: list[float], flag: str = "",
         kernel: str = K612) -> list[dict]:
    what = cost.BY_NAME[metric].what
    return [{"datapath": datapath, "mode": "", "flag": flag, "family": "v4", "direction": what,
             "streams": 1, "metric": metric, "value": v, "unit": "instructions/x",
             "repetition": i + 1, "tool": "llcost", "error": None, "kernel": kernel,
             "virt": cost.ICOUNT_VIRT} for i, v in enumerate(values)]


def values(run: Path, datapath: str, metric: str, flag: str = "",
           kernel: str = K612) -> list[float]:
    out = []
    for part in run.glob("bench.*tcg-icount*.jsonl"):
        for line in part.read_text().splitlines():
            r = json.loads(line)
            if (r["datapath"], r["flag"], r["metric"], r["kernel"]) == \
                    (datapath, flag, metric, kernel) and r["mode"] == "":
                out.append(r["value"])
    return out


def table(section: cost.CostSection, kernel: str, path: str, metric: str) -> cost.CostTable:
    k = next(k for k in section.kernels if k.kernel == kernel)
    tabs = next(tabs for p, tabs in k.paths if p.id == path)
    return next(t for t in tabs if t.metric.name == metric)


def row(t: cost.CostTable, label: str) -> cost.CostFigure:
    return next(r for r in t.rows if r.label == label)


# ---- the section -----------------------------------------------------------------------------

def test_the_section_holds_each_kernel_path_and_metric_with_mean_cv_n(tmp_path: Path) -> None:
    run = merged(tmp_path)
    section = cost.build(load_results(run))
    assert [k.kernel for k in section.kernels] == [K612, K61]          # newest first
    rr = table(section, K612, "child", "instructions_per_round_trip")
    assert rr.reference == "veth-pair" and rr.rows[0].label == "loopback"
    veth_pair = values(run, "veth-pair", "instructions_per_round_trip")
    ref = row(rr, "veth-pair")
    assert ref.reference and ref.verdict is None and ref.n == len(veth_pair) == 3
    assert ref.mean == pytest.approx(sum(veth_pair) / 3)
    assert ref.cv == pytest.approx(scipy.stats.variation(veth_pair, ddof=1))
    loop = row(rr, "loopback")
    assert ref.efficiency == pytest.approx(loop.mean / ref.mean) and loop.efficiency == 1.0
    assert [r.place for r in rr.rows] == list(range(1, len(rr.rows) + 1))
    assert [r.mean for r in rr.rows] == sorted(r.mean for r in rr.rows)
    remote = table(section, K612, "remote", "instructions_per_round_trip")
    assert remote.reference == "veth" and all(r.efficiency is None for r in remote.rows)
    assert "loopback" not in [r.label for r in remote.rows]
    # the anatomy's stack entries beside each figure, only c1's host's on the wire path
    assert row(rr, "veth-pair").stack.count == 1 and row(rr, "bridge").stack.count == 2
    assert row(remote, "veth").stack.count == 2 and row(remote, "ipvlan l2 bridge").stack.count == 1
    assert row(rr, "netkit l2 bpf").stack.count == 1 and row(remote, "bridge").stack.count == 2
    assert row(rr, "loopback").stack is None                       # not traced: "—"


def test_stack_entries_come_from_the_kernels_leg_else_the_hosts(tmp_path: Path) -> None:
    """The VM leg traces the kinds the host lacks, the host leg the rest: each datapath from
    the leg of the cost rows' kernel where it was traced there, else from the host's; a
    two-host scenario of the same kind (twohost-bridge) is never taken for the datapath."""
    results = load_results(merged(tmp_path))
    section = cost.build(results)
    host, vm = (leg.label for leg in results.legs("anatomy"))
    assert host.startswith("host") and vm.startswith("VM leg")
    rr = table(section, K612, "child", "instructions_per_round_trip")
    remote = table(section, K612, "remote", "instructions_per_round_trip")
    assert row(rr, "veth").stack.leg == row(rr, "ipvlan l2 bridge").stack.leg == vm
    assert row(rr, "veth-pair").stack.leg == row(rr, "macvlan bridge").stack.leg == host
    assert (row(rr, "bridge").stack.where, row(remote, "bridge").stack.where) == \
        ("host,c2", "host,c1")                                     # bridge's, not twohost's
    k612 = next(k for k in section.kernels if k.kernel == K612)
    legs = dict(k612.anatomy_legs)
    assert list(legs) == [vm, host] and "ipvlan l2 bridge" in legs[vm]
    assert "bridge" in legs[host] and "veth" not in legs[host]
    # a kernel without a leg of its own: the host's only (ipvlan and netkit not traced)
    r61 = table(section, K61, "child", "instructions_per_round_trip")
    assert row(r61, "bridge").stack.leg == host and row(r61, "ipvlan l2 bridge").stack is None
    page = html(build(results))[0]
    assert f"stack entries from the anatomy of: {vm} (ipvlan l2 bridge, netkit l2 bpf, veth); " \
        f"{host} (bridge, macvlan bridge, veth-pair)" in page
    # the Anatomy section names a scenario only where it is not the datapath's own
    assert "<h4>veth-pair</h4>" in page and "<h4>bridge <small>twohost-bridge</small></h4>" in page


def test_a_2_percent_costlier_datapath_is_named_with_its_size(tmp_path: Path) -> None:
    run = merged(tmp_path, (K612,))
    metric = "instructions_per_round_trip"
    base = values(run, "veth-pair", metric)
    add_rows(run, like("veth-nft", metric, [v * 1.02 for v in base])
             + like("veth-nft1", metric, [v * 1.01 for v in base]))
    rr = table(cost.build(load_results(run)), K612, "child", metric)
    two, one = row(rr, "veth-nft").verdict, row(rr, "veth-nft1").verdict
    assert two.word == "costlier" and two.change_pct == pytest.approx(2.0)
    assert two.low_pct < 2.0 < two.high_pct and two.high_pct - two.low_pct > 0
    assert one.word == "within threshold" and one.three_way == "within noise"
    page = html(build(load_results(run)))[0]
    assert re.search(r"costlier by 2\.0 % \[1\.\d – 2\.\d %\]", page)


def test_identical_repetitions_give_no_zero_width_verdict(tmp_path: Path) -> None:
    run = merged(tmp_path, (K612,))
    metric = "instructions_per_echo"
    same = like("veth-pair", metric, [16075.5] * 3, kernel="6.13.0-test") + \
        like("flat", metric, [16075.5] * 3, kernel="6.13.0-test") + \
        like("flat2", metric, [16400.25] * 3, kernel="6.13.0-test")
    add_rows(run, same)
    echo = table(cost.build(load_results(run)), "6.13.0-test", "child", metric)
    for label in ("flat", "flat2"):
        v = row(echo, label).verdict
        assert v.word == "below resolution" and not v.judged and v.text
    assert row(echo, "flat2").verdict.text == cost.IDENTICAL
    # the same through the function the bench script and the claims use
    (v,) = cost.judge([([100.0, 100.0, 100.0], [102.0, 102.0, 102.0])], metric)
    assert v.word == "below resolution"


def test_kernels_are_compared_figure_by_figure(tmp_path: Path) -> None:
    section = cost.build(load_results(merged(tmp_path)))
    changes = {(c.label, c.path.id, c.metric.what): c for c in section.changes}
    veth = changes[("veth-pair", "child", "rr")]
    assert (veth.old, veth.new) == (K61, K612)
    # 6.1 was made 9.4 % costlier: 6.12 is cheaper by 1 - 1/1.094
    assert veth.verdict.word == "cheaper"
    assert veth.verdict.change_pct == pytest.approx(100 * (1 / 1.094 - 1))
    assert changes[("bridge", "remote", "rr")].verdict.change_pct == \
        pytest.approx(100 * (1 / 1.081 - 1))
    assert changes[("loopback", "child", "rr")].verdict.word == "same"


def test_agreement_with_the_wall_clock_verdicts_and_spearman(tmp_path: Path) -> None:
    results = load_results(merged(tmp_path, (K612,)))
    got = {a.metric.what: a for a in cost.agreement(results)}
    rr = got["rr"]
    assert rr.wall_metric == "udp_oneway_latency_p50_us" and rr.host == "6.18.44-linklab"
    labels = [label for label, _, _ in rr.ranking]
    assert set(labels) == {"loopback", "veth-pair", "veth", "bridge", "macvlan bridge"}
    instr = [i for _, i, _ in rr.ranking]
    wall = [w for _, _, w in rr.ranking]
    assert rr.rho == pytest.approx(scipy.stats.spearmanr(instr, wall).statistic)
    assert len(rr.pairs) == 10 and rr.agreeing == sum(p.agree for p in rr.pairs)
    assert all(p.agree == (p.cost == p.wall) for p in rr.pairs)
    assert {p.cost for p in rr.pairs} <= {"cheaper", "costlier", "within noise"}
    bulk = got["bulk"]                 # throughput: higher is better, so inverted
    instr = [i for _, i, _ in bulk.ranking]
    thr = [-w for _, _, w in bulk.ranking]
    assert bulk.rho == pytest.approx(scipy.stats.spearmanr(instr, thr).statistic)
    assert got["conn"].wall_metric == "" and got["conn"].pairs == []
    assert got["icmp"].pairs == [] and got["icmp"].rho is None      # no ICMP on the host here


def test_the_claims_are_judged_with_the_instruction_figures(tmp_path: Path) -> None:
    data = which.build(load_results(merged(tmp_path, (K612,))))
    rows = {r.measure: r for _, _, rs in data["claims"] for r in rs}
    ipvlan = rows[f"instructions per round trip (UDP request/response, 64 B), remote → c1, "
                  f"kernel {K612}: ipvlan l2 bridge vs veth"]
    assert ipvlan.verdict in ("supports", "contradicts", "within noise")
    assert "instructions per round trip (mean)" in ipvlan.detail
    assert not any("lacks ipvlan" in r.detail for r in rows.values())
    claim2 = [m for m in rows if m.endswith("veth-bpf vs ipvlan l3 bridge")]
    assert len(claim2) == 4                          # rr and packet, both paths
    netkit = [r for m, r in rows.items() if "netkit l2 bpf vs veth" in m]
    assert len(netkit) == 2 and all("+12 %" in r.detail for r in netkit)


def test_without_instruction_rows_the_section_says_how_to_measure_them() -> None:
    results = load_results(SAMPLE)
    section = build(results).section("cost")
    assert section.empty and "make cost" in section.how_to
    page = html(build(results))[0]
    part = page[page.index('<section id="cost">'):]
    assert "pytest --vm --vm-clock=instructions -m cost" in part[:part.index("</section>")]
    claims = which.build(results)["claims"]
    assert any("make cost" in r.detail for _, _, rs in claims for r in rs)


def _without(page: str, *ids: str) -> str:
    """The page without the named sections, the navigation and the generation time."""
    for sid in ids:
        page = re.sub(rf'<section id="{sid}">.*?</section>', "", page, flags=re.DOTALL)
    page = re.sub(r"<nav>.*?</nav>", "", page, flags=re.DOTALL)
    return re.sub(r"Generated [^<]* by", "", page)


def test_the_wall_clock_sections_do_not_change_with_instruction_rows(tmp_path: Path) -> None:
    plain_dir = merged(tmp_path / "plain", kernels=(), anatomy=False)
    cost_dir = merged(tmp_path / "cost", anatomy=False)
    plain, with_cost = build(load_results(plain_dir)), build(load_results(cost_dir))
    for sid in ("summary", "throughput", "latency", "cpu", "connectivity", "dhcp"):
        a, b = plain.section(sid), with_cost.section(sid)
        assert repr(a) == repr(b), sid
    assert len(plain.charts) == len(with_cost.charts)
    assert _without(html(plain)[0], "cost", "which").replace(str(plain_dir), "RUN") == \
        _without(html(with_cost)[0], "cost", "which").replace(str(cost_dir), "RUN")


def test_a_fail_on_threshold_for_instruction_rows_reaches_the_report() -> None:
    """``linklab report --fail-on '*@tcg-icount:2%'`` judges instruction rows at 2 % and
    leaves the host's rows at --threshold."""
    rules = Rules(5.0, tuple(parse_fail_on("*@tcg-icount:2%")))

    def key(virt: str) -> tuple:
        k = dict.fromkeys(KEY, "")
        k.update(metric="instructions_per_round_trip", virt=virt)
        return tuple(k[f] for f in KEY)

    assert rules.threshold(key("tcg-icount")).pct == 2.0
    assert rules.threshold(key("none")).pct == 5.0
