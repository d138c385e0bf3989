"""Ownership records: what a run created, so that only its own leftovers are removed.

Each run appends, *before* creating anything, one JSON line per namespace, process, path or
other system object to ``/run/linklab/<marker>.jsonl``. ``clean`` reads every record whose
owning process is dead (PID and start time no longer match) and removes exactly what it lists.
The one exception is a kind in :data:`UNRECORDED_KINDS`, whose objects name the process that
made them and are held by it while it lives (tracefs instances): one whose record is gone
with its directory is removed once that process is dead and no record lists it.
"""

from __future__ import annotations

import errno
import glob
import importlib
import json
import os
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass, field

from linklab.cmd import NETNS_DIR, StillAlive, proc_starttime, stop_pid
from linklab.netns import delete_named

RECORD_DIR = os.environ.get("LINKLAB_RECORD_DIR", "/run/linklab")

# Other kinds of owned system object (tracefs instances, libvirt objects, ...): kind -> the
# module that knows them. It provides ``owned_exists(ident, data) -> bool`` and
# ``owned_remove(ident, data) -> bool`` (True when it removed something); imported only when a
# record lists such an object. Adding a kind of object is adding its module and one line here.
OBJECT_KINDS: dict[str, str] = {
    "tracefs": "linklab.anatomy.tracefs",   # anatomy: tracefs instances (rmdir)
    # two-host split: a node's NIC lent to a topology (moved back)
    "uplink": "linklab.twohost.uplink",
    # the nightly's libvirt (linklab.nightly.virt): daemons in the run's namespace, its pool,
    # networks, domains and volumes
    "libvirt-daemon": "linklab.nightly.virt",
    "libvirt-pool": "linklab.nightly.virt",
    "libvirt-network": "linklab.nightly.virt",
    "libvirt-domain": "linklab.nightly.virt",
    "libvirt-volume": "linklab.nightly.virt",
}

# Kinds whose objects carry their creating process's PID in their name and stay busy (the
# kernel refuses removal, EBUSY) while it holds them. Their module also provides
# ``owned_by_name() -> {ident: pid}``: every object whose name says it is ours, and its PID.
# ``clean`` removes those whose PID is dead — a record directory removed before anyone
# cleaned it (a drill's, a test's tmp_path) must not leave them for good.
UNRECORDED_KINDS: tuple[str, ...] = ("tracefs",)


def object_module(kind: str):
    """The module owning objects of ``kind`` (KeyError names the unknown kind)."""
    return importlib.import_module(OBJECT_KINDS[kind])


class Run:
    """The current process's run: a short marker and an append-only ownership log."""

    def __init__(self, marker: str | None = None) -> None:
        os.makedirs(RECORD_DIR, exist_ok=True)
        self.pid = os.getpid()
        self.starttime = proc_starttime(self.pid)
        # the record appears under its name already holding its owner line (a cleaner that
        # read an empty record would take it for a dead run's): write aside, then link
        draft = f"{RECORD_DIR}/.draft-{self.pid}-{secrets.token_hex(4)}"
        with open(draft, "w") as fh:
            fh.write(json.dumps({"owner": self.pid, "start": self.starttime}) + "\n")
        try:
            while True:
                self.marker = marker or secrets.token_hex(2)
                self.record = f"{RECORD_DIR}/{self.marker}.jsonl"
                try:
                    os.link(draft, self.record)   # fails if the marker is taken
                except FileExistsError:
                    if marker:
                        raise
                    continue
                # a marker is unique within one record directory only: a run recorded in
                # another (LINKLAB_RECORD_DIR: the drill, a test's child session, a second
                # user) may own ll<marker>-* namespaces already; a random marker moves on
                if marker or not glob.glob(f"{NETNS_DIR}/ll{self.marker}-*"):
                    break
                os.unlink(self.record)
        finally:
            os.unlink(draft)
        self._fh = open(self.record, "a", buffering=1)
        self._lock = threading.Lock()  # one line per entry, also from threads (DHCP clients)

    def _log(self, entry: dict) -> None:
        with self._lock:
            self._fh.write(json.dumps(entry) + "\n")

    def ns_name(self, logical: str) -> str:
        """The real namespace name for a logical one, carrying this run's marker."""
        return f"ll{self.marker}-{logical}"

    def own_namespace(self, name: str) -> None:
        self._log({"ns": name})

    def disown_namespace(self, name: str) -> None:
        self._log({"ns_gone": name})

    def own_pid(self, pid: int, starttime: int | None, argv: list[str]) -> None:
        self._log({"pid": pid, "start": starttime, "argv": argv[:6]})

    def disown_pid(self, pid: int) -> None:
        self._log({"pid_gone": pid})

    def own_path(self, path: str) -> None:
        self._log({"path": path})

    def disown_path(self, path: str) -> None:
        self._log({"path_gone": path})

    def own_object(self, kind: str, ident: str, **data: object) -> None:
        """Record an object of a kind in :data:`OBJECT_KINDS` before creating it; ``data`` is
        what its module needs to find and remove it."""
        if kind not in OBJECT_KINDS:
            raise KeyError(f"ownership: unknown object kind {kind!r} (known: "
                           f"{', '.join(OBJECT_KINDS)})")
        self._log({"obj": kind, "id": ident, "data": data})

    def disown_object(self, kind: str, ident: str) -> None:
        self._log({"obj_gone": kind, "id": ident})

    def pin(self, name: str, **info: object) -> None:
        """Keep what this run created after it ends (``linklab up``): ``clean`` leaves a
        pinned record alone and ``linklab down NAME`` releases it."""
        self._log({"pin": name, "info": info})

    def tmpdir(self, purpose: str) -> str:
        """A fresh temporary directory owned (and later removed) by this run."""
        path = tempfile.mkdtemp(prefix=f"linklab-{self.marker}-{purpose}-")
        self.own_path(path)
        return path

    def close(self) -> None:
        """End the run: its record is removed unless something it lists still exists (a
        release cut short by Ctrl-C): then the record stays for the next clean."""
        self._fh.close()
        left = read_record(self.record)
        if not (any(os.path.lexists(f"{NETNS_DIR}/{n}") for n in left.namespaces)
                or any(_alive(pid, start) for pid, start in left.pids.items())
                or any(os.path.lexists(p) for p in left.paths)
                or any(object_module(k).owned_exists(i, d) for (k, i), d in left.objects.items())):
            os.unlink(self.record)


@dataclass
class Leftovers:
    """What a dead run's record still lists."""

    record: str
    owner: int
    namespaces: list[str] = field(default_factory=list)
    pids: dict[int, int | None] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)
    objects: dict[tuple[str, str], dict] = field(default_factory=dict)  # (kind, id) -> data
    pin: str | None = None                 # kept on purpose (linklab up NAME) until down
    pin_info: dict = field(default_factory=dict)
    unrecorded: bool = False               # no record listed it: its name named a dead PID

    def empty(self) -> bool:
        return not (self.namespaces or self.pids or self.paths or self.objects)


def read_record(path: str) -> Leftovers:
    owner, owner_start = -1, None
    ns: dict[str, None] = {}
    pids: dict[int, int | None] = {}
    paths: dict[str, None] = {}
    objects: dict[tuple[str, str], dict] = {}
    pin, pin_info = None, {}
    with open(path) as fh:
        for line in fh:
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by kill -9 mid-write
            if "owner" in e:
                owner, owner_start = e["owner"], e.get("start")
            elif "ns" in e:
                ns[e["ns"]] = None
            elif "ns_gone" in e:
                ns.pop(e["ns_gone"], None)
            elif "pid" in e:
                pids[e["pid"]] = e.get("start")
            elif "pid_gone" in e:
                pids.pop(e["pid_gone"], None)
            elif "path" in e:
                paths[e["path"]] = None
            elif "path_gone" in e:
                paths.pop(e["path_gone"], None)
            elif "obj" in e:
                objects[(e["obj"], e["id"])] = e.get("data", {})
            elif "obj_gone" in e:
                objects.pop((e["obj_gone"], e["id"]), None)
            elif "pin" in e:
                pin, pin_info = e["pin"], e.get("info", {})
    left = Leftovers(path, owner, list(ns), pids, list(paths), objects, pin, pin_info)
    left.owner_start = owner_start  # type: ignore[attr-defined]
    return left


def _pinned(left: Leftovers) -> bool:
    """Kept on purpose: pinned by ``linklab up``, and its ``--held-by`` process (if any) lives."""
    holder = left.pin_info.get("held_by") if left.pin is not None else None
    return left.pin is not None and (not holder or _alive(holder["pid"], holder["start"]))


def _alive(pid: int, start: int | None) -> bool:
    """``pid`` is the process that started at ``start`` and has not exited (a zombie waiting
    for its parent to reap it holds nothing: it counts as gone)."""
    now = proc_starttime(pid)
    return now is not None and (start is None or now == start) and not _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def _pids_inside(name: str) -> list[tuple[int, int | None]]:
    """Processes living in the namespace /run/netns/``name`` (e.g. a tool a dead run started
    with ``cmd`` and never recorded: it would keep the namespace alive after deletion)."""
    try:
        st = os.stat(f"{NETNS_DIR}/{name}")
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ns = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (ns.st_dev, ns.st_ino) == (st.st_dev, st.st_ino):
                found.append((int(entry), proc_starttime(int(entry))))
    return found


def clean(*, log=print) -> list[Leftovers]:
    """Remove what runs whose process is dead left behind; return what was removed."""
    removed: list[Leftovers] = []
    for entry in sorted(os.listdir(RECORD_DIR)) if os.path.isdir(RECORD_DIR) else []:
        if ".jsonl" not in entry or entry.startswith("."):
            continue
        path = os.path.join(RECORD_DIR, entry)
        if ".clean-" in entry:   # claimed by a cleaner: reclaim only if that cleaner died
            if _alive(int(entry.rsplit("-", 1)[1]), None):
                continue
        try:
            left = read_record(path)
        except FileNotFoundError:
            continue
        if _pinned(left) or _alive(left.owner, getattr(left, "owner_start", None)):
            continue      # pinned (linklab up): released only by linklab down
        if claim_and_release(path, left, log):
            removed.append(left)
    return removed + clean_unrecorded(log=log)


def clean_unrecorded(*, log=print, prefix: str = "linklab clean") -> list[Leftovers]:
    """Remove objects of :data:`UNRECORDED_KINDS` that no record here lists and whose
    creating process is dead; one still busy (a live process holds it: another user's run,
    recorded elsewhere or in another PID namespace) is left alone."""
    removed: list[Leftovers] = []
    for kind in UNRECORDED_KINDS:
        mod = object_module(kind)
        # objects first, records second: a run records an object before creating it, so an
        # object seen here is listed in a record read after
        found = mod.owned_by_name()
        if not found:
            continue
        listed = {ident for (k, ident) in _listed_objects() if k == kind}
        for ident, pid in found.items():
            if ident in listed or _alive(pid, None):
                continue
            try:
                gone = mod.owned_remove(ident, {})
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                log(f"{prefix}: {kind} {ident} is in use (its PID {pid} is not alive here: "
                    "another PID namespace's?); left alone")
                continue
            if gone:
                log(f"{prefix}: removed {kind} {ident} of dead process {pid} (no record "
                    "listed it)")
                removed.append(Leftovers("", pid, objects={(kind, ident): {}},
                                         unrecorded=True))
    return removed


def _listed_objects() -> set[tuple[str, str]]:
    """Every (kind, id) a record in :data:`RECORD_DIR` still lists (live runs', pinned,
    kept, or claimed by a cleaner at work)."""
    listed: set[tuple[str, str]] = set()
    for path in glob.glob(f"{RECORD_DIR}/*.jsonl*"):
        try:
            listed |= set(read_record(path).objects)
        except FileNotFoundError:
            continue     # released meanwhile
    return listed


def claim_and_release(path: str, left: Leftovers, log=print,
                      owner: str = "dead run", prefix: str = "linklab clean") -> bool:
    """Claim a record (rename: of two concurrent cleaners one proceeds) and remove what it
    lists, last created first; False if another cleaner had it. A process is reported
    stopped only once it is gone; one that outlives SIGKILL keeps the record for next time."""
    claimed = f"{path.split('.jsonl')[0]}.jsonl.clean-{os.getpid()}"
    try:
        os.rename(path, claimed)
    except FileNotFoundError:
        return False
    of = f"of {owner} {os.path.basename(path).split('.jsonl')[0]}"
    kept: list[str] = []

    def stop(pid: int, start: int | None, where: str = "") -> None:
        try:
            if start is not None and stop_pid(pid, start, grace=1.0):
                log(f"{prefix}: stopped process {pid}{where} {of}")
        except StillAlive as exc:
            kept.append(str(exc))
            log(f"{prefix}: {exc}{where} {of}; its record is kept")

    for pid, start in left.pids.items():
        stop(pid, start)
    for (kind, ident), data in reversed(left.objects.items()):   # last created first
        try:
            if object_module(kind).owned_remove(ident, data):
                log(f"{prefix}: removed {kind} {ident} {of}")
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            kept.append(f"{kind} {ident} in use")   # a live process holds it: not dead
            log(f"{prefix}: {kind} {ident} {of} is in use; its record is kept")
    for name in reversed(left.namespaces):
        for pid, start in _pids_inside(name):   # inside a namespace the run owned
            stop(pid, start, f" in namespace {name}")
        if delete_named(name):
            log(f"{prefix}: deleted namespace {name} {of}")
    for p in left.paths:
        if os.path.lexists(p):
            shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)
            log(f"{prefix}: removed {p} {of}")
    if kept:
        os.rename(claimed, path)
    else:
        os.unlink(claimed)
    return True
