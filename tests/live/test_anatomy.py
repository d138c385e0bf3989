"""Datapath anatomy, live: what the kernel's code documents about each datapath's path (on the
host and in the VM leg), and that a measurement leaves no tracefs instance, nft table or trace
setting behind, even after kill -9. The parsers and attribution are in tests/unit."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from linklab import ownership
from linklab.anatomy import measure, nftcount, tracefs
from linklab.anatomy.datapaths import (
    open_scenario,
    open_veth_pair,
    scenario_datapaths,
)
from linklab.anatomy.measure import (
    Anatomy,
    LostEvents,
    rows,
    trace,
)
from linklab.bench.measure import bound
from linklab.capabilities import missing_link, missing_tool
from linklab.cmd import bkg, cmd, require
from linklab.model import SHIPPED, load_scenario
from linklab.netns import NetNS
from linklab.poll import poll
from linklab.results import kernel_release, virtualisation
from tests import LINKLAB, REPO

SCENARIOS = scenario_datapaths(SHIPPED)


def _needs_tracing() -> None:
    if (why := missing_tool("nft")):
        pytest.skip(why)
    try:
        with tracefs.mounted() as root:
            if not os.path.isdir(f"/proc/self/fd/{root}/events/skb/kfree_skb"):
                pytest.skip("kernel lacks the skb:kfree_skb tracepoint (CONFIG_TRACEPOINTS)")
    except tracefs.TracefsError as exc:
        pytest.skip(str(exc))


# ---- live: what the kernel's code documents --------------------------------------------------

def _cells(measured: list[Anatomy], check: str, family: str = "v4") -> dict[str, Anatomy]:
    return {a.probe.direction: a for a in measured
            if a.probe.cell.check == check and a.probe.cell.family == family}


def _counts(a: Anatomy) -> tuple[int, int, int, int]:
    return a.count("queue"), a.count("xmit"), a.count("rx"), a.count("stack")


@pytest.mark.anatomy
@pytest.mark.connectivity
def test_veth_pair_crosses_one_backlog_and_one_stack_entry_per_hop(run, results) -> None:
    """veth_xmit() hands the skb to the peer with __dev_forward_skb() + netif_rx(): one
    queue, one xmit, one backlog and one netif_receive_skb per direction, and the same
    counts on a second run."""
    _needs_tracing()
    with open_veth_pair(run) as target:
        first = trace(target, run)
        second = trace(target, run)
    for row in rows(target, first, kernel_release(), virtualisation()):
        results.append("anatomy", row, part=f"test-{kernel_release()}-{virtualisation()}")
    assert [a.key() for a in first] == [a.key() for a in second]
    for a in first:
        assert a.delivered, a.path
        assert _counts(a) == (1, 1, 1, 1), a.path
        assert a.stack_ns == ("c2" if a.probe.direction == "request" else "c1")
        assert a.nf == 4, a.nf_path       # output, postrouting; prerouting, input


@pytest.mark.anatomy
@pytest.mark.connectivity
def test_routed_veth_enters_the_hosts_stack_between_the_containers(run) -> None:
    """veth (routed): c1 -> c2 is two veth hops, so two netif_receive_skb — the second in
    the host namespace, which forwards (prerouting, forward, postrouting)."""
    _needs_tracing()
    with open_scenario(load_scenario(SHIPPED / "veth.toml"), run, ("child-to-child",),
                       ("v4",)) as target:
        measured = trace(target, run)
    for a in measured:
        assert _counts(a) == (2, 2, 2, 2), a.path
        assert "host:forward" in a.nf_path.split() and a.nf == 7, a.nf_path
    assert _cells(measured, "child-to-child")["request"].stack_ns == "host,c2"


@pytest.mark.anatomy
@pytest.mark.connectivity
def test_macvlan_bridge_delivers_through_the_lower_device(run) -> None:
    """macvlan bridge: macvlan_queue_xmit() forwards a frame for a sibling with
    dev_forward_skb(vlan->lowerdev): the one netif_receive_skb happens on the parent, whose
    rx_handler steers it into c2 — no IP stack of the host namespace is crossed. A child
    cannot reach its parent: the echo never reaches a device (nothing answers ARP)."""
    _needs_tracing()
    sc = load_scenario(SHIPPED / "macvlan-bridge.toml")
    with open_scenario(sc, run, ("child-to-child", "host-to-child"), ("v4",)) as target:
        measured = trace(target, run)
    c2c = _cells(measured, "child-to-child")
    for a in c2c.values():
        assert _counts(a) == (1, 1, 1, 1), a.path
        assert a.stack_ns == "host" and "host:" not in a.nf_path, (a.path, a.nf_path)
    h2c = _cells(measured, "host-to-child")
    assert not h2c["request"].delivered and h2c["request"].end == "never delivered"
    assert h2c["reply"].end.startswith("not sent")


# under TCG (the VM leg) one family keeps the leg short; the paths do not differ by family
FAMILIES = ("v4",) if virtualisation() == "tcg" else ("v4", "v6")


@pytest.mark.anatomy
@pytest.mark.parametrize("sc", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_anatomy_of_every_cell_matches_the_matrix(sc, run, results) -> None:
    """Each reachability cell's round trip (echo request and reply) is delivered exactly
    when the matrix expects it to pass; every probe that reached a device was counted; the
    rows go to the results table ``anatomy``."""
    for h in sc.hosts:
        if (why := missing_link(h.kind, h.mode, h.flag)):
            pytest.skip(why)
    _needs_tracing()
    with open_scenario(sc, run, families=FAMILIES) as target:
        measured = trace(target, run)
    for row in rows(target, measured, kernel_release(), virtualisation()):
        results.append("anatomy", row, part=f"test-{kernel_release()}-{virtualisation()}")
    wrong = []
    for cell in target.cells:
        pair = _cells(measured, cell.check, cell.family)
        # the matrix observes a topology's first echoes: compare the first attempts
        first = {d: a.first or a for d, a in pair.items()}
        round_trip = first["request"].delivered and first["reply"].delivered
        if round_trip != (cell.expected == "pass"):
            wrong.append(f"{cell.check} {cell.family}: expected {cell.expected}, request "
                         f"{pair['request'].end} [{pair['request'].path}], reply "
                         f"{pair['reply'].end} [{pair['reply'].path}]")
        for a in pair.values():
            if a.delivered:
                assert a.count("stack") >= 1 and a.nf >= 2, (cell, a.path, a.nf_path)
    assert not wrong, "\n".join(wrong)


# ---- nothing left behind ---------------------------------------------------------------------

TOP_LEVEL = ("tracing_on", "set_event", "buffer_size_kb", "current_tracer", "trace_options")


def _top_level() -> dict[str, str]:
    with tracefs.mounted() as root:
        return {f: tracefs.read(root, f) for f in TOP_LEVEL}


def _instances() -> list[str]:
    with tracefs.mounted() as root:
        return os.listdir(f"/proc/self/fd/{root}/instances")


@pytest.mark.anatomy
def test_a_measurement_leaves_no_instance_table_or_setting(run) -> None:
    _needs_tracing()
    before = _top_level()
    with open_veth_pair(run, ("v4",)) as target:
        measured = trace(target, run)
        for ns in target.namespaces.values():
            assert nftcount.tables_present(ns) == []
    assert measured and all(a.delivered for a in measured)
    assert not any(f"linklab-{run.marker}-" in i for i in _instances())   # others' may exist
    assert _top_level() == before


def test_owned_instance_is_seen_and_removed_by_its_kind() -> None:
    _needs_tracing()
    name = f"linklab-test-{os.getpid()}"
    with tracefs.mounted() as root:
        os.mkdir(tracefs.instance_path(name), dir_fd=root)
    assert tracefs.owned_exists(name, {})
    assert tracefs.owned_remove(name, {})
    assert not tracefs.owned_exists(name, {}) and not tracefs.owned_remove(name, {})


CHILD = textwrap.dedent("""\
    # PR_SET_PDEATHSIG: die with the test
    import ctypes, signal; ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    import sys, time
    from linklab.ownership import Run
    from linklab.anatomy import nftcount, tracefs
    from linklab.anatomy.datapaths import open_veth_pair
    run = Run()
    with open_veth_pair(run, ("v4",)) as target, \\
            nftcount.counting(target.namespaces, {"p0": (700, 731, "v4")}), \\
            tracefs.instance(run) as inst:
        inst.configure({ev: tracefs.net_filter(sorted(target.devices), 700, 731)
                        for ev in tracefs.NET_EVENTS}, tracefs.NET_BUFFER_KB)
        inst.start()
        print(run.marker, inst.name, " ".join(ns.name for ns in target.namespaces.values()),
              flush=True)
        time.sleep(60)
    """)


@pytest.mark.anatomy
def test_kill_9_mid_measurement_is_cleaned_by_ownership(tmp_path: Path) -> None:
    """A run killed while its instance, counting tables and namespaces exist: ``linklab
    clean`` removes the instance (recorded before mkdir) and the namespaces (the tables die
    with them); the host's top-level trace settings are untouched throughout."""
    _needs_tracing()
    before = _top_level()
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True,
                            cwd=REPO)
    try:
        line = proc.stdout.readline().split()
        assert line, "the child did not start its measurement"
        marker, instance, namespaces = line[0], line[1], line[2:]
        assert instance in _instances()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    removed = ownership.clean(log=lambda _m: None)
    mine = [r for r in removed if Path(r.record).name.startswith(marker)]
    assert mine and ("tracefs", instance) in mine[0].objects
    assert instance not in _instances()
    deadline = time.monotonic() + 5
    while any(os.path.exists(f"/run/netns/{n}") for n in namespaces) and \
            time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(os.path.exists(f"/run/netns/{n}") for n in namespaces)
    assert _top_level() == before


@contextmanager
def _measuring_child(records: Path) -> Iterator[tuple[subprocess.Popen, str, list[str]]]:
    """CHILD recording into ``records``, mid-measurement: (process, instance, namespaces);
    killed at exit."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, env=os.environ | {"LINKLAB_RECORD_DIR": str(records)})
    try:
        line = proc.stdout.readline().split()
        assert line, "the child did not start its measurement"
        assert line[1] in _instances()
        yield proc, line[1], line[2:]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()


@pytest.mark.anatomy
def test_a_descriptor_lost_to_a_ctrl_c_does_not_keep_the_instance(run) -> None:
    """A Ctrl-C during a slow open (``trace`` with O_TRUNC, in ``clear``) raises
    KeyboardInterrupt as the open returns, before the descriptor is stored: the kernel then
    refused rmdir (EBUSY) and the instance outlived the run (SIGINT at random moments of a
    measurement left one in 6 of 25 runs). The instance's exit closes such a descriptor."""
    _needs_tracing()
    with tracefs.instance(run) as inst:
        lost = os.open(f"{inst.path}/trace", os.O_RDONLY, dir_fd=inst.root)
        name = inst.name
    assert name not in _instances()
    with pytest.raises(OSError):
        os.fstat(lost)


@pytest.mark.anatomy
def test_an_instance_whose_record_directory_was_removed_is_cleaned(tmp_path: Path) -> None:
    """2026-12-06 15:52: a drill's run killed mid-measurement, its record directory (the
    drill's work directory) removed before anyone cleaned it, left linklab-08f0-anatomy-6072
    that no record listed. ``linklab clean`` now removes it: its name says the anatomy made
    it, in a process that is dead, and no record lists it."""
    _needs_tracing()
    records = tmp_path / "drill-records"
    with _measuring_child(records) as (_proc, instance, namespaces):
        pass                                   # killed -9 here
    shutil.rmtree(records)
    try:
        out = subprocess.run([*LINKLAB, "clean"], cwd=REPO, capture_output=True, text=True,
                             timeout=120, check=True).stdout
        assert instance not in _instances(), out
        assert f"removed tracefs {instance} of dead process" in out, out
    finally:    # its namespaces went unrecorded with the directory: ours to delete here
        for name in namespaces:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.mark.anatomy
def test_a_live_runs_instance_is_refused_to_a_cleaner_that_thinks_it_dead(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two users at once: a run recorded in another directory and seen as dead (another PID
    namespace's) holds a file of its instance open, so the kernel refuses rmdir (EBUSY) and
    the cleaner leaves it; once that run is gone, its own record cleans it."""
    _needs_tracing()
    records = tmp_path / "other-user"
    with _measuring_child(records) as (proc, instance, _namespaces):
        monkeypatch.setattr(ownership, "_alive", lambda _pid, _start: False)
        said: list[str] = []
        assert ownership.clean_unrecorded(log=said.append) == []
        assert instance in _instances() and proc.poll() is None
        assert any(f"tracefs {instance} is in use" in m for m in said), said
        monkeypatch.undo()
    monkeypatch.setattr(ownership, "RECORD_DIR", str(records))
    removed = ownership.clean(log=lambda _m: None)
    assert any(("tracefs", instance) in r.objects for r in removed)
    assert instance not in _instances()


# receive-stack entries (netif_receive_skb) on the container's host — the host's and the
# container's namespaces — for a packet arriving from the wire (the remote's reply to c1):
# the seed's (Cilium's) "does not cross the kernel stack twice", counted
WIRE_TO_CONTAINER = {
    "veth": 2,                # host/eth0, then c1's veth after the host routed it
    "bridge": 2,              # host/eth0, then c1's veth after the host routed it to br0
    "macvlan-bridge": 1,      # host/eth0; macvlan's rx_handler hands it to c1
    "ipvlan-l2-bridge": 1,    # host/eth0; ipvlan's rx_handler hands it to c1
    "ipvlan-l3-bridge": 1,
    "ipvlan-l3s-bridge": 1,
}


@pytest.mark.anatomy
@pytest.mark.parametrize("name", list(WIRE_TO_CONTAINER))
def test_a_packet_from_the_wire_enters_the_stack_once_on_ipvlan_twice_on_veth(
        name: str, run) -> None:
    """__netif_receive_skb_core() runs a device's rx_handler inside the same entry: macvlan
    and ipvlan hand the skb to the child (RX_HANDLER_ANOTHER) without a second
    netif_receive_skb, where veth needs the host's stack to route it and a second entry on
    the container's veth (veth_xmit -> netif_rx)."""
    sc = load_scenario(SHIPPED / f"{name}.toml")
    if (why := missing_link(sc.hosts[0].kind, sc.hosts[0].mode, sc.hosts[0].flag)):
        pytest.skip(why)
    _needs_tracing()
    with open_scenario(sc, run, ("child-to-remote",), ("v4",)) as target:
        measured = trace(target, run)
    inbound = _cells(measured, "child-to-remote")["reply"]
    assert inbound.delivered, inbound.path
    here = [ns for ns in inbound.stack_ns.split(",") if ns in ("host", "c1")]
    assert len(here) == WIRE_TO_CONTAINER[name], inbound.path


# ---- another user's traffic on the machine ---------------------------------------------------

OLD_BUFFER_KB = 512       # the one buffer the drop event shared with the net events before
KFREE_EVENT_BYTES = 44    # one skb:kfree_skb in a ring buffer (per_cpu stats: bytes / entries)
BLAST_PORT = 5299
BLAST_START_S = 10.0


def _udp_rcvbuf_errors(ns: NetNS) -> int:
    """Datagrams ``ns``'s UDP dropped at a full socket buffer: one skb:kfree_skb each."""
    with ns.enter():
        with open("/proc/thread-self/net/snmp") as fh:
            names, values = [line.split() for line in fh if line.startswith("Udp:")][:2]
    return int(values[names.index("RcvbufErrors")])


@contextmanager
def _udp_blast(other: ownership.Run) -> Iterator[Callable[[], int]]:
    """Another user's traffic, as a UDP bench makes it: iperf3 at full rate over a veth pair
    of another run's namespaces (none of the traced devices). Yields the datagrams its
    receiver has dropped so far, once it drops them."""
    iperf3 = require("iperf3")
    with open_veth_pair(other, ("v4",)) as pair:
        server, client = pair.ns("c2"), pair.ns("c1")
        with bkg([iperf3, "-s", "-p", str(BLAST_PORT)], ns=server, owner=other,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as srv:
            assert poll(lambda: bound(server, BLAST_PORT, "tcp"), BLAST_START_S,
                        alive=lambda: srv.poll() is None), \
                f"iperf3 -s did not listen (exit {srv.poll()})"
            with bkg([iperf3, "-c", pair.addrs[("c2", 4)], "-p", str(BLAST_PORT), "-u",
                      "-b", "0", "-t", "600"], ns=client, owner=other,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as blaster:
                start = _udp_rcvbuf_errors(server)
                if not poll(lambda: _udp_rcvbuf_errors(server) - start >= 1000, BLAST_START_S,
                            0.05, alive=lambda: blaster.poll() is None):
                    assert blaster.poll() is None, f"iperf3 -c exited {blaster.returncode}"
                    pytest.xfail(f"the UDP blast dropped {_udp_rcvbuf_errors(server) - start}"
                                 f" datagrams in {BLAST_START_S:g} s: this machine's receiver "
                                 "keeps up, there is no drop storm to trace beside")
                yield lambda: _udp_rcvbuf_errors(server)


def _drop_echo_requests(ns: NetNS, family: str) -> None:
    """A netfilter drop in ``ns`` (input) of ``family``'s echo requests; dies with ``ns``."""
    match = "icmpv6 type echo-request" if family == "v6" else "icmp type echo-request"
    cmd([require("nft", "nftables"), "-f", "-"], ns=ns, timeout=30, input=(
        "table inet linklab_test_drop {\n chain input {\n"
        "  type filter hook input priority 0; policy accept;\n"
        f"  {match} drop\n }}\n}}\n"))


@pytest.mark.anatomy
def test_another_users_udp_blast_changes_no_count_and_no_drop_reason(
        run, monkeypatch: pytest.MonkeyPatch) -> None:
    """skb:kfree_skb has no device or length to filter on and sees the whole machine: another
    user's UDP stream, dropping ~100k datagrams/s, overflowed the one 512 KiB/CPU buffer and
    failed the anatomy ("lost N events"). The frees now record into an instance of their own
    only inside probe windows, each window's losses counted: beside the same stream the
    routed veth's counts, and c2's netfilter drop of IPv6 echo requests with its reason, read
    as in quiet; and a window that does lose frees (a buffer made too small) is named, never
    counted short."""
    _needs_tracing()
    if (why := missing_tool("iperf3")):
        pytest.skip(why)
    with open_scenario(load_scenario(SHIPPED / "veth.toml"), run) as target:
        _drop_echo_requests(target.ns("c2"), "v6")
        target.cells = [replace(c, expected="blocked") if (c.dst, c.family) == ("c2", "v6")
                        else c for c in target.cells]
        quiet = trace(target, run)
        other = ownership.Run()
        try:
            with _udp_blast(other) as dropped:
                before, start = dropped(), time.monotonic()
                busy = trace(target, run)
                blasted, seconds = dropped() - before, time.monotonic() - start
                monkeypatch.setattr(tracefs, "frees_buffer_kb", lambda _cpus: 16)
                monkeypatch.setattr(measure, "RETRY_PAUSE", 0.0)
                try:
                    trace(target, run)
                    lost = None
                except LostEvents as exc:
                    lost = exc
        finally:
            other.close()
    v6 = _cells(quiet, "child-to-child", "v6")["request"]
    assert v6.end == "dropped" and v6.drop_reason == "NETFILTER_DROP", (v6.end, v6.path)
    assert sum(a.delivered for a in quiet) == len(quiet) - 2      # v6 c1 -> c2, both ways
    assert [a.key() for a in busy] == [a.key() for a in quiet]
    held = OLD_BUFFER_KB * 1024 * (os.cpu_count() or 1) // KFREE_EVENT_BYTES
    print(f"anatomy beside a UDP blast: {blasted} datagrams dropped in {seconds:.1f} s "
          f"(the old buffer held {held} drop events), passes "
          f"{max(a.passes for a in busy)}; with 16 KiB: {lost}")
    if blasted <= held:
        pytest.xfail(f"the blast dropped {blasted} datagrams while the anatomy ran, fewer "
                     f"than the old {OLD_BUFFER_KB} KiB/CPU buffer held ({held}): it would not "
                     "have failed it")
    # the dropped probe's frees are not read: its drop is unknown, and the error says so
    assert lost is not None and re.search(r"child-to-child v6 request \(\d+ free events; it "
                                          r"ended never delivered\).*16 KiB/CPU", str(lost))
