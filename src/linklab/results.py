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
    # one row per DHCP client-id cell
    "dhcp": ("scenario", "setup", "server", "server_option", "client", "client_id",
             "expected", "observed", "outcome", "leases", "detail", "kernel", "virt",
             "lease_s", "server_start_s"),
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


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``path`` so that readers see the old file or the whole new one."""
    # the host name too: two VM guests share this directory and may run the same PID
    tmp = path.with_name(f".{path.name}.{os.uname().nodename}.{os.getpid()}.tmp")
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(tmp, mode) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


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
        with open(self.path / name, "a") as fh:
            fh.write(json.dumps({c: row.get(c) for c in columns}) + "\n")

    def extend(self, table: str, rows: list[dict[str, Any]], part: str = "") -> None:
        """Append several rows at once (a truth table's pairs: one open, one write)."""
        columns = TABLES[table]
        for row in rows:
            if extra := set(row) - set(columns):
                raise ValueError(f"{table}: unknown column(s) {sorted(extra)}; known: {columns}")
        name = f"{table}.{part}.jsonl" if part else f"{table}.jsonl"
        with open(self.path / name, "a") as fh:
            fh.write("".join(json.dumps({c: row.get(c) for c in columns}) + "\n"
                             for row in rows))

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
        """Write ``<table>.csv`` and ``<table>.parquet`` atomically from the jsonl rows."""
        import pandas as pd  # lazy: heavy (~0.35 s); every pytest worker imports this module

        rows = self.rows(table)
        if not rows:
            return 0
        frame = pd.DataFrame(rows, columns=list(TABLES[table]))
        atomic_write(self.path / f"{table}.csv", frame.to_csv(index=False))
        tmp = self.path / f".{table}.parquet.tmp"
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, self.path / f"{table}.parquet")
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
