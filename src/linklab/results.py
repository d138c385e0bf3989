"""The results store: one directory per run, read back by reports (never a live run).

Layout of ``results/<run-id>/``::

    meta.json            schema version, kernel, CPU, virtualisation, tools, commit, times
    <table>.jsonl        rows appended as each measurement finishes (survives a kill)
    <table>.csv/.parquet the same rows, written atomically when the run ends
    raw/                 raw tool output (iperf3 -J, sockperf), one file per measurement
    junit-<leg>.xml      pytest's JUnit XML

Tables and their columns are declared in :data:`TABLES`; numbers travel as numbers with
the unit in a column, never as formatted strings.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from linklab.suite import new_run_id as new_run_id  # re-exported: run ids are made in suite

SCHEMA_VERSION = 1

TABLES: dict[str, tuple[str, ...]] = {
    # one row per reachability / L2 / MTU cell
    "connectivity": ("scenario", "kind", "mode", "flag", "family", "check", "expected",
                     "observed", "outcome", "reason", "detail", "kernel", "virt",
                     # the scenario's own checks (linklab.flows): the flow, and where it was
                     # declared ("check": [[check]], "pairs": a [pairs] truth table's pair)
                     "src", "dst", "proto", "port", "origin"),
    # one row per DHCP client-id cell; clients_kernel: the other machine's kernel when the
    # clients ran there (a two-host scenario split across two nodes), '' on one machine
    "dhcp": ("scenario", "setup", "server", "server_option", "client", "client_id",
             "expected", "observed", "outcome", "leases", "detail", "kernel", "virt",
             "lease_s", "server_start_s", "clients_kernel"),
    # one row per measured figure (tidy)
    "bench": ("datapath", "mode", "flag", "family", "direction", "streams", "metric", "value",
              "unit", "repetition", "tool", "error", "kernel", "virt",
              # the machine during the measurement, and the datapath's slot in its block
              "steal_pct", "load1", "disturbed", "position"),
    # one row per traced probe packet: scenario x check x family x direction (anatomy)
    "anatomy": ("scenario", "kind", "mode", "flag", "family", "check", "direction", "expected",
                "delivered", "end", "queue", "xmit", "rx", "stack", "nf", "drop_reason",
                "drop_location", "stack_ns", "path", "nf_path", "probe_bytes", "kernel", "virt"),
}


def virtualisation() -> str:
    """How linklab virtualised this leg: 'none' on the machine itself, 'kvm' or 'tcg' inside
    its VM leg (set by ``linklab vm`` as LINKLAB_VIRT). What the machine itself runs on is
    :func:`machine_virtualisation`."""
    return os.environ.get("LINKLAB_VIRT") or "none"


@functools.cache
def machine_virtualisation() -> str:
    """What systemd-detect-virt says of the machine (e.g. 'none', 'kvm', 'docker')."""
    try:
        out = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        return "vm" if " hypervisor" in Path("/proc/cpuinfo").read_text() else "none"
    except OSError:
        return "unknown"


def kernel_release() -> str:
    return platform.release()


class ResultsError(OSError):
    """The results directory cannot be written (a full disk, a read-only mount); the message
    names the file and says what was kept."""


def _cannot(path: Path, exc: OSError, kept: str) -> ResultsError:
    return ResultsError(exc.errno, f"cannot write {path}: {exc.strerror or exc} ({kept}); "
                                   "free space on that filesystem or pass another "
                                   "--results-dir")


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``path`` so that readers see the old file or the whole new one; on a write error
    the temporary file is removed and :class:`ResultsError` names ``path``."""
    # the host name too: two VM guests share this directory and may run the same PID
    tmp = path.with_name(f".{path.name}.{os.uname().nodename}.{os.getpid()}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):    # a directory gone read-only keeps it
            tmp.unlink(missing_ok=True)
        raise _cannot(path, exc, "not written; an earlier version, if any, is unchanged") \
            from None


def append_whole(path: Path, text: str) -> None:
    """Append ``text`` (whole rows) to ``path`` or nothing: a write the disk cuts short is
    truncated back, so that the file keeps whole rows and a later row does not land on half
    of this one."""
    data = text.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise _cannot(path, exc, "the rows written before are kept") from None
    try:
        start = os.fstat(fd).st_size
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            try:
                os.ftruncate(fd, start)      # needs no space; fails only on a read-only fs,
            except OSError:                  # where the write cannot have landed either
                pass
            raise _cannot(path, exc, "this row not written; the rows before it are kept") \
                from None
    finally:
        os.close(fd)


@dataclass
class RunDir:
    """One run's results directory."""

    path: Path

    @classmethod
    def create(cls, root: Path | str, run_id: str) -> RunDir:
        path = Path(root) / run_id
        path.mkdir(parents=True, exist_ok=True)
        (path / "raw").mkdir(exist_ok=True)
        return cls(path)

    def append(self, table: str, row: dict[str, Any], part: str = "") -> None:
        """Append one row to ``<table>[.<part>].jsonl``; unknown columns are an error."""
        columns = TABLES[table]
        extra = set(row) - set(columns)
        if extra:
            raise ValueError(f"{table}: unknown column(s) {sorted(extra)}; known: {columns}")
        name = f"{table}.{part}.jsonl" if part else f"{table}.jsonl"
        append_whole(self.path / name, json.dumps({c: row.get(c) for c in columns}) + "\n")

    def extend(self, table: str, rows: list[dict[str, Any]], part: str = "") -> None:
        """Append several rows at once (a truth table's pairs: one open, one write)."""
        columns = TABLES[table]
        for row in rows:
            if extra := set(row) - set(columns):
                raise ValueError(f"{table}: unknown column(s) {sorted(extra)}; known: {columns}")
        name = f"{table}.{part}.jsonl" if part else f"{table}.jsonl"
        append_whole(self.path / name, "".join(json.dumps({c: row.get(c) for c in columns})
                                               + "\n" for row in rows))

    def rows(self, table: str) -> list[dict[str, Any]]:
        """All rows of a table from its .jsonl parts (complete or interrupted runs)."""
        out: list[dict[str, Any]] = []
        for part in sorted(self.path.glob(f"{table}*.jsonl")):
            for line in part.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
        return out

    def finalise(self, table: str) -> int:
        """Write ``<table>.csv`` and ``<table>.parquet`` atomically from the jsonl rows (each
        whole or not at all: :class:`ResultsError` names the one that could not be)."""
        import pandas as pd  # lazy: heavy (~0.35 s); every pytest worker imports this module

        rows = self.rows(table)
        if not rows:
            return 0
        frame = pd.DataFrame(rows, columns=list(TABLES[table]))
        atomic_write(self.path / f"{table}.csv", frame.to_csv(index=False))
        tmp = self.path / f".{table}.parquet.tmp"
        try:
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, self.path / f"{table}.parquet")
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise _cannot(self.path / f"{table}.parquet", exc, "not written; the rows are in "
                          f"{table}*.jsonl") from None
        return len(rows)

    def write_meta(self, meta: dict[str, Any]) -> None:
        current = self.read_meta() if (self.path / "meta.json").exists() else {}
        current.update(meta)
        current["schema"] = SCHEMA_VERSION
        atomic_write(self.path / "meta.json", json.dumps(current, indent=2, sort_keys=True))

    def read_meta(self) -> dict[str, Any]:
        return json.loads((self.path / "meta.json").read_text())


def machine_meta() -> dict[str, Any]:
    """What a result is worth knowing about the machine it came from."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {"kernel": kernel_release(), "virt": virtualisation(),
            "machine_virt": machine_virtualisation(), "cpu_model": cpu,
            "cores": os.cpu_count(), "git_commit": commit, "hostname": platform.node()}
