"""What a run owns, observed independently of its record: processes, namespaces, paths."""

from __future__ import annotations

import glob
import os
import tempfile
from dataclasses import dataclass, field

from linklab.drill import NETNS


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    start: int
    netns: int
    argv: tuple[str, ...]


def processes() -> dict[int, Proc]:
    out: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
            net = os.readlink(f"/proc/{entry}/ns/net")
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = tuple(a.decode(errors="replace") for a in fh.read().split(b"\0") if a)
        except OSError:
            continue
        comm = stat[stat.index(b"(") + 1:stat.rindex(b")")].decode(errors="replace")
        fields = stat[stat.rindex(b")") + 2:].split()
        if fields[0] == b"Z":
            continue
        out[int(entry)] = Proc(int(entry), int(fields[1]), comm, int(fields[19]),
                               int(net[5:-1]), argv)
    return out


def descendants(root: int, procs: dict[int, Proc]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    found, todo = set(), [root]
    while todo:
        for k in kids.get(todo.pop(), []):
            if k not in found:
                found.add(k)
                todo.append(k)
    return found


def ns_inode(name: str) -> int | None:
    try:
        return os.stat(f"{NETNS}/{name}").st_ino
    except OSError:
        return None


@dataclass
class Owned:
    """What a set of runs owns right now (observed, not read from their records)."""

    namespaces: dict[str, int | None] = field(default_factory=dict)
    pids: dict[int, tuple[int, str]] = field(default_factory=dict)   # pid -> (start, comm)
    paths: set[str] = field(default_factory=set)
    records: set[str] = field(default_factory=set)

    def count(self) -> int:
        return len(self.namespaces) + len(self.pids) + len(self.paths)

    def describe(self) -> str:
        return (f"{len(self.namespaces)} ns, {len(self.pids)} proc "
                f"({','.join(sorted({c for _s, c in self.pids.values()})) or '-'}), "
                f"{len(self.paths)} tmp")


class Observer:
    """Watches the runs whose records appear in ``record_dir``; ``exclude`` holds decoys."""

    def __init__(self, record_dir: str) -> None:
        self.record_dir = record_dir
        self.markers: set[str] = set()
        self.exclude: set[object] = set()
        self.root_pids: set[int] = set()

    def _scan_markers(self) -> set[str]:
        for f in os.listdir(self.record_dir):
            if ".jsonl" in f and not f.startswith("."):
                self.markers.add(f.split(".jsonl")[0])
        return self.markers

    def observe(self, extra_pids: set[int] = frozenset()) -> Owned:  # type: ignore[assignment]
        markers = self._scan_markers()
        o = Owned()
        for f in os.listdir(self.record_dir):
            if f.split(".jsonl")[0] in markers and ".jsonl" in f:
                o.records.add(f)
        names = os.listdir(NETNS) if os.path.isdir(NETNS) else []
        for name in names:
            if any(name.startswith(f"ll{m}-") for m in markers) and name not in self.exclude:
                o.namespaces[name] = ns_inode(name)
        inodes = {i for i in o.namespaces.values() if i}
        procs = processes()
        mine: set[int] = set(extra_pids)
        for root in self.root_pids:
            mine |= descendants(root, procs)
        for p in procs.values():
            if p.netns in inodes:
                mine.add(p.pid)
        for pid in mine:
            if pid in procs and pid not in self.root_pids and pid not in self.exclude:
                o.pids[pid] = (procs[pid].start, procs[pid].comm)
        for m in markers:
            for path in glob.glob(f"{tempfile.gettempdir()}/linklab-{m}-*"):
                if path not in self.exclude:
                    o.paths.add(path)
        return o

    def still(self, before: Owned) -> Owned:
        """Which of ``before``'s objects still exist (same PID *and* start time)."""
        now = Owned()
        procs = processes()
        now.namespaces = {n: i for n, i in before.namespaces.items() if os.path.exists(
            f"{NETNS}/{n}")}
        # a namespace whose mount is gone but whose processes live on is caught via the pids
        now.pids = {p: v for p, v in before.pids.items() if p in procs and procs[p].start == v[0]}
        now.paths = {p for p in before.paths if os.path.lexists(p)}
        now.records = {r for r in before.records if os.path.exists(f"{self.record_dir}/{r}")}
        return now


def merge(a: Owned, b: Owned) -> Owned:
    return Owned({**a.namespaces, **b.namespaces}, {**a.pids, **b.pids}, a.paths | b.paths,
                 a.records | b.records)
