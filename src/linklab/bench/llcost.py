"""llcost: the per-operation cost helper (``llcost.c`` beside this module), compiled by the C
compiler into a cache keyed by the source's hash, and its four measurements.

Each client times only its own loop (CLOCK_MONOTONIC) and never waits on a timer while it
measures, so on the instruction clock (QEMU ``-icount shift=0``) its nanoseconds are guest
instructions. The servers (``udp-echo``, ``udp-sink``, ``tcp-serve``) run inside the server
namespace with ``bkg``, owned by the run and stopped by PID; ``icmp-rr`` needs none (the
server namespace's kernel answers).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from linklab.bench.measure import wait_ready
from linklab.bench.tools import ToolFailure
from linklab.cmd import CmdError, MissingTool, NamespaceLike, bkg, cmd, require
from linklab.netns import NetNS

SOURCE = Path(__file__).resolve().parent / "llcost.c"
CACHE = Path(os.environ.get("LINKLAB_LLCOST_CACHE", "/var/cache/linklab/llcost"))
COMPILERS = (("cc", "gcc"), ("clang", "clang"))   # (command, Debian package)
FLAGS = ("-std=c11", "-O2", "-Wall", "-Wextra")
PORT = 5310
TIMEOUT_S = 300.0     # whole client run; the helper's own timeouts (1-2 s) name the failure
FIELDS = ("op", "count", "ns", "bytes")
OPTIONAL = ("chunks",)   # round trips and connections: ns of each tenth of the timed loop


@dataclass(frozen=True)
class OpResult:
    """``count`` operations of ``op`` took ``ns`` (instructions on the instruction clock);
    ``bytes``: payload bytes the client sent meanwhile."""

    op: str
    count: int
    ns: int
    bytes: int
    chunks: tuple[int, ...] = ()

    @property
    def ns_per_op(self) -> float:
        return self.ns / self.count

    @property
    def median_ns(self) -> int:
        """The run's ns as if every slice had taken the median slice's time (a burst of
        unrelated work lands in one slice); the plain total when there are no slices."""
        if not self.chunks:
            return self.ns
        return round(statistics.median(self.chunks) * len(self.chunks))


def parse(text: str, op: str | None = None) -> OpResult:
    """The result in llcost's stdout (exactly one JSON line); ToolFailure on anything else,
    or when ``op`` is given and the line is another operation's."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    head = " ".join(lines)[:200]
    if len(lines) != 1:
        raise ToolFailure(f"llcost: expected one JSON line, got {len(lines)}: {head!r}")
    try:
        doc = json.loads(lines[0])
    except (ValueError, RecursionError) as exc:   # also too deep, or an int too long
        raise ToolFailure(f"llcost: output is not JSON ({exc}): {head!r}") from None
    if not isinstance(doc, dict) or not set(FIELDS) <= set(doc) <= {*FIELDS, *OPTIONAL}:
        raise ToolFailure(f"llcost: expected the fields {', '.join(FIELDS)}: {head!r}")
    chunks = doc.get("chunks", [])
    if not isinstance(chunks, list) or not all(type(c) is int and c > 0 for c in chunks):
        raise ToolFailure(f"llcost: chunks must be a list of positive integers: {head!r}")
    if not isinstance(doc["op"], str) or not all(
            type(doc[k]) is int and doc[k] >= 0 for k in FIELDS[1:]):
        raise ToolFailure(f"llcost: op must be a string, count, ns and bytes non-negative "
                          f"integers: {head!r}")
    if doc["count"] == 0 or doc["ns"] == 0:
        raise ToolFailure(f"llcost: no operation measured (count or ns is 0): {head!r}")
    if op is not None and doc["op"] != op:
        raise ToolFailure(f"llcost: expected a {op} result, got {doc['op']}: {head!r}")
    return OpResult(doc["op"], doc["count"], doc["ns"], doc["bytes"], tuple(chunks))


# ---- the binary ------------------------------------------------------------------------------

def _compiler() -> str:
    for tool, package in COMPILERS:
        try:
            return require(tool, package)
        except MissingTool:
            continue
    raise MissingTool("no C compiler is installed (Debian package gcc or clang); "
                      "run `make setup`")


def missing() -> str | None:
    """Why llcost cannot be built here (no C compiler, naming the package), or None."""
    try:
        _compiler()
    except MissingTool as exc:
        return str(exc)
    return None


def _key(compiler: str) -> str:
    # the compiler by its real path, size and mtime: `cc --version` costs seconds under TCG
    real = Path(compiler).resolve()
    st = real.stat()
    h = hashlib.sha256(f"{real}\0{st.st_size}\0{st.st_mtime_ns}\0{' '.join(FLAGS)}".encode())
    h.update(SOURCE.read_bytes())
    return h.hexdigest()[:16]


def _compile(compiler: str, out: Path) -> Path:
    try:
        cmd([compiler, *FLAGS, SOURCE, "-o", out / "llcost"], timeout=120)
    except CmdError as exc:
        raise ToolFailure(f"compiling {SOURCE}: {exc}") from None
    return out / "llcost"


def binary(run: object = None) -> Path:
    """The llcost executable of the current source: from the cache, compiled into it, or
    (cache not writable, e.g. the VM guest's read-only root) into a directory ``run`` owns."""
    compiler = _compiler()
    key = _key(compiler)
    cached = CACHE / key / "llcost"
    if cached.exists():
        return cached
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=CACHE))
    except OSError:
        if run is None:
            raise ToolFailure(f"{CACHE} is not writable and no run owns a scratch directory "
                              f"(compile llcost once where it is: python -m linklab.bench."
                              f"llcost)") from None
        return _compile(compiler, Path(run.tmpdir("llcost")))  # type: ignore[attr-defined]
    try:
        _compile(compiler, work)
        work.chmod(0o755)                 # mkdtemp's 0700 would hide it from other users
        try:
            work.rename(cached.parent)    # atomic: a concurrent compile of the same key loses
        except OSError:
            shutil.rmtree(work, ignore_errors=True)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return cached


# ---- measurements ----------------------------------------------------------------------------

def _log_tail(log: IO[bytes], limit: int = 400) -> str:
    log.seek(0)
    return log.read().decode(errors="replace").strip()[-limit:]


def _client(argv: list[object], ns: NamespaceLike, op: str, count: int, warmup: int,
            server_log: IO[bytes] | None = None) -> OpResult:
    """Run one client inside ``ns``; its result, or ToolFailure with its stderr (and the
    server's, if it said anything)."""
    if warmup:
        argv = [*argv, "--warmup", warmup]
    try:
        res = cmd(argv, ns=ns, timeout=TIMEOUT_S, check=False)
    except (CmdError, MissingTool) as exc:
        raise ToolFailure(str(exc)) from None
    server = _log_tail(server_log) if server_log is not None else ""
    extra = f" | server: {server}" if server else ""
    if res.returncode != 0:
        words = res.stderr.strip() or f"llcost {op} exited {res.returncode}"
        raise ToolFailure(words + extra)
    try:
        result = parse(res.stdout, op)
    except ToolFailure as exc:
        raise ToolFailure(f"{exc}{extra}") from None
    if result.count != count:
        raise ToolFailure(f"llcost {op}: measured {result.count} operations, asked {count}")
    return result


def _served(server: str, proto: str, server_ns: NetNS, client_ns: NetNS, addr: str,
            port: int, client: list[object], count: int, warmup: int, run: object) -> OpResult:
    """Start the llcost ``server`` on ``addr`` ``port`` inside ``server_ns``, wait until it is
    bound, run ``client`` (argv after the binary) inside ``client_ns``, stop the server."""
    exe = binary(run)
    with tempfile.TemporaryFile() as log, \
            bkg([exe, server, addr, port], ns=server_ns, owner=run, stdout=log,
                stderr=log, grace=0.5) as proc:
        wait_ready(server_ns, port, proto, proc, log, f"llcost {server}")
        return _client([exe, *client], client_ns, str(client[0]), count, warmup, log)


def udp_rr(server_ns: NetNS, client_ns: NetNS, addr: str, count: int, size: int = 64, *,
           warmup: int = 0, run: object, port: int = PORT) -> OpResult:
    """``count`` UDP round trips of ``size`` bytes from ``client_ns`` to an echo server on
    ``addr`` in ``server_ns``."""
    return _served("udp-echo", "udp", server_ns, client_ns, addr, port,
                   ["udp-rr", addr, port, count, size], count, warmup, run)


def icmp_rr(client_ns: NetNS, addr: str, count: int, *, warmup: int = 0,
            run: object = None) -> OpResult:
    """``count`` ICMP (ICMPv6 for a v6 ``addr``) echo round trips from ``client_ns`` to
    ``addr``, answered by its namespace's kernel."""
    return _client([binary(run), "icmp-rr", addr, count], client_ns, "icmp-rr", count, warmup)


def udp_stream(server_ns: NetNS, client_ns: NetNS, addr: str, count: int, size: int = 64, *,
               warmup: int = 0, run: object, port: int = PORT) -> OpResult:
    """``count`` datagrams of ``size`` bytes sent back to back to a sink on ``addr``, timed
    until the sink has counted them; ToolFailure naming the drops if any was lost."""
    return _served("udp-sink", "udp", server_ns, client_ns, addr, port,
                   ["udp-stream", addr, port, count, size], count, warmup, run)


def tcp_crr(server_ns: NetNS, client_ns: NetNS, addr: str, count: int, *, warmup: int = 0,
            run: object, port: int = PORT) -> OpResult:
    """``count`` TCP connections (connect, 1-byte request, 1-byte reply, close)."""
    return _served("tcp-serve", "tcp", server_ns, client_ns, addr, port,
                   ["tcp-crr", addr, port, count], count, warmup, run)


if __name__ == "__main__":    # compile into the cache (before booting a read-only guest)
    print(binary())
