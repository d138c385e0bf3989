"""A results directory that cannot be written mid-run: a small tmpfs that fills under the
connectivity matrix and under the bench, and one remounted read-only under the matrix.

The run stops with an error naming the file; the jsonl keeps whole rows; no parquet, csv or
temporary file is left half-written; every namespace the run made is gone (its own: those of
the markers its records had, whatever other users run meanwhile); ``linklab report`` renders
what remains and says what is missing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Set
from pathlib import Path

import pytest

from tests import LINKLAB, PYTEST, REPO

SELECTION = ("tests/live/test_connectivity.py", "-m", "connectivity", "-k",
             "veth and not bpf and not cni and not twohost")   # 21 cells, ~2 s
BENCH = ("bench/test_bench.py", "-m", "bench", "--bench-datapaths=veth", "--bench-reps=1",
         "--bench-warmup=0", "--bench-duration=2", "--bench-latency-duration=2")   # ~10 s


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {ln.split()[0] for ln in out.stdout.splitlines() if ln.strip()}


def _wait(proc: subprocess.Popen, records: Path, markers: set[str], timeout: float = 300,
          until: object = None) -> int | None:
    """Wait for the run (or ``until()``), noting the markers of the records it makes in
    ``records``: its namespaces are those of its markers (another user's run beside it has
    namespaces of its own, recorded elsewhere, which are none of this run's leftovers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        markers |= {p.name.split(".jsonl")[0] for p in records.glob("*.jsonl*")}
        if until is not None and until():  # type: ignore[operator]
            return None
        time.sleep(0.005)
    if proc.poll() is None:
        proc.kill()
        pytest.fail(f"the run did not end within {timeout:.0f} s")
    return proc.returncode


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """Function scope; root, mount(8). A 256 KiB tmpfs of its own, unmounted after the test."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "linklab-test", mnt],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", mnt], check=False)


def _start(results: Path, records: Path, run_id: str, log: Path,
           selection: tuple[str, ...] = SELECTION) -> subprocess.Popen:
    env = {**os.environ, "LINKLAB_RUN_ID": run_id, "LINKLAB_RECORD_DIR": str(records)}
    with open(log, "w") as fh:
        return subprocess.Popen([*PYTEST, "-q", *selection, f"--results-dir={results}"],
                                cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _check_remains(run: Path, records: Path, markers: Set[str], out: str, tmp_path: Path,
                   why: str, table: str = "connectivity") -> int:
    """Whole rows kept, nothing half-written, nothing left, and a report that renders; the
    number of rows kept."""
    assert f"cannot write {run}/" in out and why in out, out[-2000:]
    parts = list(run.glob(f"{table}*.jsonl"))
    assert parts, f"no rows kept: {sorted(p.name for p in run.iterdir())}"
    for part in parts:
        text = part.read_text()
        assert text.endswith("\n"), f"{part.name} ends in half a row"
        rows = [json.loads(line) for line in text.splitlines()]
        assert rows and all(r.get("outcome", r.get("metric")) for r in rows)
        kept = len(rows)
    half = [p.name for p in run.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not half, f"temporary files left: {half}"
    parquet = run / f"{table}.parquet"
    if parquet.exists():    # written whole or not at all
        import pandas as pd  # heavy; only this branch needs it

        assert len(pd.read_parquet(parquet)) == sum(len(p.read_text().splitlines())
                                                    for p in parts)
    assert not list(records.glob("*.jsonl")), "the run left its ownership record"
    assert markers, "the run's ownership record was never seen"
    left = {n for n in _namespaces() if any(n.startswith(f"ll{m}-") for m in markers)}
    assert not left, f"namespaces left: {sorted(left)}"
    html = tmp_path / "report" / "index.html"
    rep = subprocess.run([*LINKLAB, "report", str(run), "-o", str(html)], cwd=REPO,
                         capture_output=True, text=True, timeout=120, check=False)
    assert rep.returncode == 0 and html.is_file(), rep.stdout + rep.stderr
    if not parquet.exists():
        assert "not finalised" in rep.stdout + rep.stderr, rep.stdout + rep.stderr
    return kept


def test_a_results_disk_that_fills_mid_run(small_fs: Path, tmp_path: Path,
                                           request: pytest.FixtureRequest) -> None:
    """About two 4 KiB pages free: the matrix's rows fill them after a dozen cells."""
    (small_fs / "filler").write_bytes(b"\0" * (248 * 1024))
    records = tmp_path / "records"
    records.mkdir()
    markers: set[str] = set()
    proc = _start(small_fs / "results", records, "disk-full", tmp_path / "run.log")
    # another user's run beside this one: a namespace of its own that no record here lists
    other = f"llu-{secrets.token_hex(2)}-host"
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        assert _wait(proc, records, markers) == 2       # pytest: interrupted
        kept = _check_remains(small_fs / "results" / "disk-full", records, markers,
                              (tmp_path / "run.log").read_text(), tmp_path,
                              "No space left on device")
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)
    request.node.user_properties.append(("rows_kept", kept))   # the drill reads it


def test_a_results_disk_remounted_read_only_mid_run(small_fs: Path, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    """Remounted read-only once the first rows are in."""
    records = tmp_path / "records"
    records.mkdir()
    markers: set[str] = set()
    run = small_fs / "results" / "read-only"
    proc = _start(small_fs / "results", records, "read-only", tmp_path / "run.log")
    if _wait(proc, records, markers, 120, until=lambda: sum(
            len(p.read_text().splitlines()) for p in run.glob("connectivity*.jsonl")) >= 3) \
            is not None:
        pytest.fail(f"the run wrote no rows to remount under (exit {proc.poll()})")
    subprocess.run(["mount", "-o", "remount,ro", small_fs], check=True)
    rc = _wait(proc, records, markers)
    out = (tmp_path / "run.log").read_text()
    assert rc == 2, out[-2000:]
    kept = _check_remains(run, records, markers, out, tmp_path, "Read-only file system")
    request.node.user_properties.append(("rows_kept", kept))


def test_a_results_disk_that_fills_mid_bench(small_fs: Path, tmp_path: Path,
                                             request: pytest.FixtureRequest) -> None:
    """The bench's raw iperf3 output fills the disk after a few measurements (~100 KiB)."""
    for tool in ("iperf3", "sockperf"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} missing")
    (small_fs / "filler").write_bytes(b"\0" * (150 * 1024))
    records = tmp_path / "records"
    records.mkdir()
    markers: set[str] = set()
    proc = _start(small_fs / "results", records, "bench-full", tmp_path / "run.log", BENCH)
    assert _wait(proc, records, markers) == 2
    kept = _check_remains(small_fs / "results" / "bench-full", records, markers,
                          (tmp_path / "run.log").read_text(), tmp_path,
                          "No space left on device", table="bench")
    request.node.user_properties.append(("rows_kept", kept))
