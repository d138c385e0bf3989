"""Measure: send one probe packet per cell and direction through a live datapath and count,
from the kernel's own tracepoints and netfilter counters, every step it took.

The probe is the matrix's own: an ICMP echo from a ping socket in the source namespace, and the
echo reply the destination's kernel sends back. Request and reply have one length, so each cell
is traced twice: first with the destination ignoring echoes (``icmp/echo_ignore_all``: the
request alone; it arrived if the destination's ``InEchos`` counter moved), then as a round trip;
the reply's anatomy is the round trip minus the request's.

Exactness is designed in:
  * each traced packet has an IP length of its own (``BASE_BYTES + STRIDE * index``):
    tracepoints report the skb length, nft ``meta length`` matches it, so a count belongs to
    exactly one probe and ARP, ND, MLD or any other chatter (other lengths) is never counted;
  * tracepoints are filtered in the kernel by the datapath's run-unique device names
    (:mod:`linklab.anatomy.datapaths`), in a tracefs instance of the run's own;
  * a warm-up pass sends every probe once untraced, so neighbours are resolved before the
    counted pass; one measurement at a time on the machine (a lock), so two runs' probes of
    equal length never meet in one trace;
  * drops (``skb:kfree_skb``: location + reason) are attributed by the skbaddr chain, as pwru
    follows a packet: a drop belongs to the probe whose event last carried that skb address,
    if it happened inside that probe's window (a ``trace_marker`` line opens each window) and
    the probe was not delivered. A freed skb's address is soon reused by other packets, so a
    free (``skb:kfree_skb`` or ``skb:consume_skb``) ends the chain: the next drop at that
    address is another packet's (an ND message, or another user's datagram);
  * the frees have no field to tell our packets from the machine's (no device, no length)
    and another user's traffic can drop ~100k packets/s: they record into an instance of
    their own only while a probe's window is open, emptied before a window once it holds
    many or lost any (:class:`Windows`);
  * no event is silently missing: both buffers count what they could not keep, per window.
    A window that lost net events, or free events while its probe was not delivered, has its
    cell traced again (up to :data:`RETRIES` times), then :class:`LostEvents` names it.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from linklab.anatomy import nftcount, tracefs
from linklab.anatomy.datapaths import Cell, Target, family_number
from linklab.checks import errno_name
from linklab.ownership import RECORD_DIR, Run
from linklab.suite import time_scale

SCALE = time_scale()
QUIET = 0.2 * SCALE          # silence watched for a probe that does not arrive
POSITIVE_WAIT = 3.0 * SCALE  # longest wait for a probe expected to arrive
SETTLE = 0.02 * SCALE        # after an arrival: let copies (floods, reflections) finish
BASE_BYTES = 700             # probe IP lengths: BASE_BYTES + STRIDE * index (< the 1400 MTU)
STRIDE = 32                  # room for the link-layer header some tracepoints include
MAX_BYTES = 1400             # the scenarios' MTU
ICMP_HEADER = 8
IP_HEADER = {4: 20, 6: 40}
DIRECTIONS = ("request", "reply")
ECHO_REPLY = {4: 0, 6: 129}
ECHO_REQUEST = {4: 8, 6: 128}
ECHO_IGNORE = {4: "net/ipv4/icmp_echo_ignore_all", 6: "net/ipv6/icmp/echo_ignore_all"}
POLL = 0.005 * SCALE
RETRIES = 3                  # passes again over the cells whose window lost events
RETRY_PAUSE = 0.5 * SCALE    # before the n-th: n times this (let another user's burst pass)
FREES_KEPT_MAX = 4096        # frees kept before the buffer is emptied (each read parses them)
MARK = "linklab-probe"
LOOPBACK = "lo"
BRIDGE_NF = ("net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
             "net/bridge/bridge-nf-call-arptables")
FREES = ("kfree_skb", "consume_skb")
STEPS = {"net_dev_queue": "queue", "net_dev_xmit": "xmit", "netif_rx": "rx",
         "netif_receive_skb": "stack"}


@dataclass(frozen=True)
class Probe:
    """One traced exchange of a cell: ``request`` = the echo request alone (the destination
    ignores echoes), ``reply`` = the round trip (its anatomy minus the request's is the
    reply's)."""

    index: int
    cell: Cell
    direction: str

    @property
    def id(self) -> str:
        return f"p{self.index}"

    @property
    def ip_bytes(self) -> int:
        return BASE_BYTES + STRIDE * self.index

    @property
    def lengths(self) -> tuple[int, int]:
        return self.ip_bytes, self.ip_bytes + STRIDE - 1

    def payload(self) -> bytes:
        fam = family_number(self.cell.family)
        return bytes(self.ip_bytes - IP_HEADER[fam] - ICMP_HEADER)


@dataclass
class Anatomy:
    """What one probe packet did: counts per step, where it entered stacks, how it ended."""

    probe: Probe
    sent: bool = False
    delivered: bool = False
    send_error: str = ""
    steps: list[tuple[str, str]] = field(default_factory=list)   # (step, "ns/ifname")
    hooks: list[tuple[str, str, str, int]] = field(default_factory=list)  # ns, family, hook, n
    drops: list[tuple[str, str]] = field(default_factory=list)   # (reason, location)
    first: Anatomy | None = None   # the untraced first attempt, when it ended otherwise
    passes: int = 1                # traced passes it took (a window that lost events: again)

    def count(self, step: str) -> int:
        return sum(1 for s, _ in self.steps if s == step)

    @property
    def nf(self) -> int:
        return sum(n for *_, n in self.hooks)

    @property
    def end(self) -> str:
        first = f" (first attempt: {self.first.end})" if self.first is not None else ""
        return self._end() + first

    def _end(self) -> str:
        if not self.sent:
            return f"not sent ({self.send_error})" if self.send_error else "not sent"
        if self.delivered:
            return "delivered"
        return "dropped" if self.drops else "never delivered"

    @property
    def drop_reason(self) -> str:
        return ",".join(dict.fromkeys(r for r, _ in self.drops))

    @property
    def drop_location(self) -> str:
        return ",".join(dict.fromkeys(loc for _, loc in self.drops))

    @property
    def stack_ns(self) -> str:
        """The namespaces whose stack the packet entered, in order."""
        return ",".join(where.split("/")[0] for s, where in self.steps if s == "stack")

    @property
    def path(self) -> str:
        """pwru-style: device after device, the steps taken on each."""
        groups: list[tuple[str, list[str]]] = []
        for step, where in self.steps:
            if groups and groups[-1][0] == where:
                groups[-1][1].append(step)
            else:
                groups.append((where, [step]))
        return " > ".join(f"{where}[{','.join(steps)}]" for where, steps in groups)

    @property
    def nf_path(self) -> str:
        return " ".join(f"{ns}:{'' if fam == 'inet' else fam + '-'}{hook}"
                        + (f"x{n}" if n > 1 else "") for ns, fam, hook, n in self.hooks)

    def line(self, datapath: str) -> str:
        """The bench line: ``anatomy <datapath> <check> <dir>: queue=N xmit=N rx=N stack=N
        nf=N drop=<reason|->`` (a probe not delivered says so even without a drop)."""
        c = self.probe.cell
        check = c.check if c.family == "v4" else f"{c.check}/{c.family}"
        return (f"anatomy {datapath} {check} {self.probe.direction}: "
                f"queue={self.count('queue')} xmit={self.count('xmit')} rx={self.count('rx')} "
                f"stack={self.count('stack')} nf={self.nf} drop={self.drop_word}")

    @property
    def drop_word(self) -> str:
        """The bench line's ``drop=``: the reason, ``never-delivered``, ``not-sent`` or ``-``."""
        if self.delivered:
            return "-"
        if not self.sent:
            return "not-sent"
        return self.drop_reason or "never-delivered"

    def key(self) -> tuple:
        """What must be identical across runs and kernels for the same datapath."""
        return (self.probe.cell.check, self.probe.cell.family, self.probe.direction,
                self.count("queue"), self.count("xmit"), self.count("rx"), self.count("stack"),
                self.nf, self.drop_reason, self.end)


def probes_of(cells: list[Cell]) -> list[Probe]:
    out = []
    for cell in cells:
        for direction in DIRECTIONS:
            out.append(Probe(len(out), cell, direction))
    return out


@contextmanager
def machine_lock() -> Iterator[None]:
    """One anatomy measurement at a time on this machine (probe lengths repeat across runs)."""
    os.makedirs(RECORD_DIR, exist_ok=True)
    with open(f"{RECORD_DIR}/.anatomy.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _ping(target: Target, ns: str, family: int) -> socket.socket:
    af, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if family == 6 else \
        (socket.AF_INET, socket.IPPROTO_ICMP)
    with target.ns(ns).enter():
        sock = socket.socket(af, socket.SOCK_DGRAM, proto)
    sock.setblocking(False)
    sock.bind((target.addrs[(ns, family)], 0))
    return sock


def in_echos(target: Target, ns: str, family: int) -> int:
    """The echo requests ``ns``'s ICMP layer received (``InEchos``, counted even when it
    ignores them)."""
    with target.ns(ns).enter():
        if family == 6:
            with open("/proc/thread-self/net/snmp6") as fh:
                return next(int(line.split()[1]) for line in fh
                            if line.startswith("Icmp6InEchos "))
        with open("/proc/thread-self/net/snmp") as fh:
            names, values = [line.split() for line in fh if line.startswith("Icmp:")][:2]
        return int(values[names.index("InEchos")])


def _echo_reply(sock: socket.socket, family: int, size: int, timeout: float) -> bool:
    """Did an echo reply carrying ``size`` bytes of payload arrive within ``timeout`` s?"""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            break
        try:
            data = sock.recv(65535)
        except OSError:
            continue        # an ICMP error queued on the socket
        if data and data[0] == ECHO_REPLY[family] and len(data) == ICMP_HEADER + size:
            return True
    return False


def _request_arrived(target: Target, cell: Cell, family: int, before: int,
                     timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if in_echos(target, cell.dst, family) > before:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def exchange(target: Target, probes: list[Probe],
             windows: Windows | None = None) -> dict[int, Anatomy]:
    """Send every probe once, one after the other: a cell's request alone (the destination
    ignoring echoes), then, if it arrived, the round trip; ``windows`` opens a window before
    each probe is sent and closes it when its wait is over."""
    out: dict[int, Anatomy] = {}
    by_cell: dict[Cell, list[Probe]] = {}
    for p in probes:
        by_cell.setdefault(p.cell, []).append(p)
    for cell, pair in by_cell.items():
        fam = family_number(cell.family)
        dst = target.ns(cell.dst)
        ignore = dst.read_sysctl(ECHO_IGNORE[fam])
        sock = _ping(target, cell.src, fam)
        try:
            wait = POSITIVE_WAIT if cell.expected == "pass" else QUIET
            for p in pair:
                res = out[p.index] = Anatomy(p)
                if p.direction == "reply" and not out[pair[0].index].delivered:
                    res.send_error = "request not delivered"
                    continue
                payload = p.payload()
                before = in_echos(target, cell.dst, fam)
                dst.sysctl(ECHO_IGNORE[fam], 1 if p.direction == "request" else 0)
                if windows is not None:
                    windows.open(p.index)
                try:
                    sock.sendto(struct.pack("!BBHHH", ECHO_REQUEST[fam], 0, 0, 0, p.index + 1)
                                + payload, (target.addrs[(cell.dst, fam)], 0))
                    res.sent = True
                except OSError as exc:
                    res.send_error = errno_name(exc.errno or 0)
                else:
                    if p.direction == "request":
                        res.delivered = _request_arrived(target, cell, fam, before, wait)
                    else:
                        res.delivered = _echo_reply(sock, fam, len(payload), wait)
                    time.sleep(SETTLE if res.delivered else 0)
                if windows is not None:
                    # its frees matter only if it was sent and not delivered (a drop)
                    windows.close(p.index, res.sent and not res.delivered)
        finally:
            sock.close()
            dst.sysctl(ECHO_IGNORE[fam], ignore)
    return out


def attribute(events: list[tracefs.Event], results: dict[int, Anatomy],
              devices: dict[str, str], shared: frozenset[str] = frozenset()) -> None:
    """Give each tracepoint hit to its probe (by length) and each drop to the probe whose
    event last carried the dropped skb's address, unless that skb was freed since.

    A device whose name other runs' namespaces also have (``shared``: the upstream switch's
    fixed port names; every namespace's ``lo``) counts only when its skb is the one this
    probe's previous step carried, inside the probe's window: another run's packet of the
    same length on its own ``p-host`` is not ours (seen once under load)."""
    last_owner: dict[str, int] = {}
    window: int | None = None
    for ev in events:
        if ev.event == "tracing_mark_write" and ev.mark.startswith(MARK):
            window = int(ev.mark.split()[1])
            continue
        if ev.event in FREES:
            # the skb ends here: its address's next packet is another's
            owner = last_owner.pop(ev.skbaddr, None)
            if ev.event == "kfree_skb" and owner is not None and owner == window \
                    and not results[owner].delivered:
                results[owner].drops.append((ev.reason, ev.location))
            continue
        step = STEPS.get(ev.event)
        if step is None or ev.len < BASE_BYTES:
            continue
        index = (ev.len - BASE_BYTES) // STRIDE
        if index not in results:
            continue
        chained = last_owner.get(ev.skbaddr) == index == window
        if ev.dev in devices and (ev.dev not in shared or chained):
            results[index].steps.append((step, devices[ev.dev]))
            last_owner[ev.skbaddr] = index
        elif ev.dev == LOOPBACK and chained:
            results[index].steps.append((step, LOOPBACK))


def bridge_netfilter_off(target: Target) -> list[str]:
    """Turn bridge-nf-call-* off in the target's namespaces where br_netfilter exists; return
    the namespaces where it was on.

    br_netfilter (loaded on many machines, e.g. by container runtimes, built in on some)
    makes IP frames *bridged* between ports also cross the inet hooks: the same kernel
    datapath would count 3 more hooks per bridge on such a machine than on a stock one.
    Anatomy counts the kernel's own bridge path everywhere (the sysctls are per namespace)."""
    was_on = []
    for name, ns in target.namespaces.items():
        for key in BRIDGE_NF:
            try:
                if ns.read_sysctl(key) != "0":
                    ns.sysctl(key, 0)
                    was_on.append(name)
            except FileNotFoundError:
                break          # no br_netfilter in this kernel: nothing to turn off
    return sorted(set(was_on))


class LostEvents(RuntimeError):
    """Probe windows still lost events after :data:`RETRIES` more passes: counts would not be
    exact. Names each probe, what it lost and how it ended."""


class Windows:
    """The probe windows of one traced pass, and the events each lost.

    The net events go to one instance for the whole pass (a ``trace_marker`` line opens each
    window); a loss is charged to the window open when the kernel counted it. The frees
    (``skb:kfree_skb``, ``skb:consume_skb``) record into an instance of their own only while
    a window is open (another user's frees between our windows cost nothing), which a marker
    opens too; it is emptied before a window once it holds :data:`FREES_KEPT_MAX` events or
    lost some (emptying waits for an RCU grace period, ~20 ms here). A window's
    frees are read only when they matter (the probe was sent and not delivered), and only
    if none was lost while it was open."""

    def __init__(self, net: tracefs.Instance, frees: tracefs.Instance) -> None:
        self.net, self.frees = net, frees
        self.opened: list[int] = []             # probe indexes, in window order
        self._net_lost = net.lost()
        self.net_lost: dict[int, int] = {}      # probe index -> net events lost
        self.frees_lost: dict[int, int] = {}    # probe index -> free events lost
        self.free_events: list[tracefs.Event] = []

    def _charge_net(self) -> None:
        now = self.net.lost()
        if now > self._net_lost and self.opened:
            current = self.opened[-1]
            self.net_lost[current] = self.net_lost.get(current, 0) + now - self._net_lost
        self._net_lost = now

    def open(self, index: int) -> None:
        self._charge_net()
        self.opened.append(index)
        kept, lost = self.frees.counts()
        if kept > FREES_KEPT_MAX or lost:       # so a loss counted at close is this window's
            self.frees.clear()
        self.net.mark(f"{MARK} {index}")
        self.frees.start()
        self.frees.mark(f"{MARK} {index}")

    def close(self, index: int, frees_matter: bool) -> None:
        self.frees.pause()
        if not frees_matter:
            return
        if (lost := self.frees.counts()[1]):
            self.frees_lost[index] = lost
            return
        events = self.frees.events()
        start = max((n for n, e in enumerate(events)
                     if e.event == "tracing_mark_write" and e.mark == f"{MARK} {index}"),
                    default=None)
        if start is None:
            raise tracefs.TracefsError(f"tracefs {self.frees.path}: the mark of window "
                                       f"{index} is missing, yet nothing was lost")
        self.free_events += [e for e in events[start + 1:] if e.event in FREES]

    def finish(self) -> None:
        self._charge_net()

    def lossy(self) -> dict[int, str]:
        """probe index -> what its window lost. A net event lost in a window may have been
        the previous probe's, arriving late: that one is charged too."""
        out: dict[int, list[str]] = {}
        for before, index in zip([None, *self.opened], self.opened):
            if (n := self.net_lost.get(index)):
                out.setdefault(index, []).append(f"{n} net events")
                if before is not None:
                    out.setdefault(before, []).append(f"{n} net events in the next window")
            if (n := self.frees_lost.get(index)):
                out.setdefault(index, []).append(f"{n} free events")
        return {i: ", ".join(what) for i, what in sorted(out.items())}


def _traced(target: Target, run: Run, probes: list[Probe], span: tuple[int, int]
            ) -> tuple[dict[int, Anatomy], dict[int, str]]:
    """One traced pass over ``probes``: their anatomies, and the windows that lost events."""
    net_events = {ev: tracefs.net_filter([*sorted(target.devices), LOOPBACK], *span)
                  for ev in tracefs.NET_EVENTS}
    with nftcount.counting(target.namespaces,
                           {p.id: (*p.lengths, p.cell.family) for p in probes}) as nf, \
            tracefs.instance(run) as net, tracefs.instance(run, "anatomy-frees") as frees:
        net.configure(net_events, tracefs.NET_BUFFER_KB)
        frees.configure(tracefs.FREE_EVENTS, tracefs.frees_buffer_kb(len(net.cpus)))
        windows = Windows(net, frees)
        net.start()
        try:
            results = exchange(target, probes, windows)
        finally:
            net.pause()
        windows.finish()
        # one order for both instances (the same trace clock); on a tie the net event first
        events = sorted([*net.events(), *windows.free_events], key=lambda e: e.ts)
        counters = nf.read()
    attribute(events, results, target.devices, target.shared)
    for res in results.values():
        res.hooks = nftcount.hooks_crossed(counters, res.probe.id, list(target.namespaces))
    return results, windows.lossy()


def trace(target: Target, run: Run, cells: list[Cell] | None = None) -> list[Anatomy]:
    """The anatomy of every cell of ``target`` (both directions), warm-up pass first; the
    cells whose windows lost events are traced again, up to :data:`RETRIES` times."""
    probes = probes_of(target.cells if cells is None else cells)
    if not probes:
        return []
    bridge_netfilter_off(target)
    span = BASE_BYTES, BASE_BYTES + STRIDE * len(probes) - 1
    if span[1] >= MAX_BYTES:
        raise ValueError(f"{target.name}: {len(probes)} probes do not fit under the "
                         f"{MAX_BYTES}-byte MTU; trace fewer checks or families at a time")
    warm = exchange(target, probes)               # warm-up: neighbours, routes, caches
    with machine_lock():
        results, lossy = _traced(target, run, probes, span)
        for attempt in range(1, RETRIES + 1):
            if not lossy:
                break
            time.sleep(RETRY_PAUSE * attempt)
            cells = {probes[i].cell for i in lossy}
            again, lossy = _traced(target, run, [p for p in probes if p.cell in cells], span)
            for index, res in again.items():
                res.passes = attempt + 1
                results[index] = res
    if lossy:
        raise LostEvents(f"anatomy {target.name}: the trace lost events in the window of "
                         + "; ".join(f"{_name(probes[i])} ({what}; it ended "
                                     f"{results[i].end})" for i, what in lossy.items())
                         + f", in {RETRIES + 1} passes: other traffic on the machine outran "
                         f"the buffers ({tracefs.NET_BUFFER_KB} KiB/CPU of net events, "
                         f"{tracefs.frees_buffer_kb(os.cpu_count() or 1)} KiB/CPU of frees); "
                         "run again when it is quieter")
    for p in probes:
        if p.direction == "reply":
            results[p.index] = minus(results[p.index], results[p.index - 1])
        if warm[p.index].delivered != results[p.index].delivered:
            # the matrix observes first attempts: say so when a later one ended otherwise
            results[p.index].first = warm[p.index]
    return [results[p.index] for p in probes]


def _name(p: Probe) -> str:
    return f"{p.cell.check} {p.cell.family} {p.direction}"


def minus(round_trip: Anatomy, request: Anatomy) -> Anatomy:
    """The reply's anatomy: the round trip's steps and hooks without the request's (which
    happen first, and the same way, in both)."""
    steps = list(round_trip.steps)
    for step in request.steps:
        if step in steps:
            steps.remove(step)
    hooks = {(ns, fam, hook): n for ns, fam, hook, n in round_trip.hooks}
    for ns, fam, hook, n in request.hooks:
        hooks[(ns, fam, hook)] = hooks.get((ns, fam, hook), 0) - n
    return replace(round_trip, steps=steps,
                   hooks=[(ns, fam, hook, n) for (ns, fam, hook), n in hooks.items() if n > 0])


def rows(target: Target, measured: list[Anatomy], kernel: str, virt: str) -> list[dict]:
    """Rows of the results table ``anatomy``."""
    out = []
    for a in measured:
        c = a.probe.cell
        out.append({
            "scenario": target.name, "kind": target.kind, "mode": target.mode,
            "flag": target.flag, "family": c.family, "check": c.check,
            "direction": a.probe.direction, "expected": c.expected, "delivered": a.delivered,
            "end": a.end, "queue": a.count("queue"), "xmit": a.count("xmit"),
            "rx": a.count("rx"), "stack": a.count("stack"), "nf": a.nf,
            "drop_reason": a.drop_reason, "drop_location": a.drop_location,
            "stack_ns": a.stack_ns, "path": a.path, "nf_path": a.nf_path,
            "probe_bytes": a.probe.ip_bytes, "kernel": kernel, "virt": virt})
    return out
