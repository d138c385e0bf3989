"""Scale, live: all pairs of a 250-container scenario (bench/scale.py's, icmp and tcp/80)
pass through the pytest matrix run from outside the repo, one truth-table test per probe,
one results row per pair, nothing left behind; ``--all-pairs`` turns a scenario's [expect]
into every pair's expectation."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import REPO

spec = importlib.util.spec_from_file_location("linklab_bench_scale", REPO / "bench" / "scale.py")
scale = importlib.util.module_from_spec(spec)
spec.loader.exec_module(scale)


@pytest.mark.connectivity
def test_all_pairs_of_250_containers_pass_and_leave_nothing(tmp_path: Path, run_pytest,
                                                             netns_names) -> None:
    d = tmp_path / "scenarios"
    d.mkdir()
    (d / "scale-250.toml").write_text(scale.scale_scenario(250, ["icmp", "tcp:80"]))
    work, records = tmp_path / "work", tmp_path / "records"
    work.mkdir()
    records.mkdir()
    # its namespaces are those of the markers its records had (watched while it runs): another
    # user's make test beside this one runs this very scenario (ll<its marker>-c250)
    markers: set[str] = set()
    other = f"llu-{secrets.token_hex(2)}-c250"    # that user's, recorded elsewhere
    subprocess.run(["ip", "netns", "add", other], check=True)
    try:
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(run_pytest, work, "-p", "no:xdist", "-m", "connectivity", "-v",
                                  f"--scenarios={d}", f"--results-dir={tmp_path / 'results'}",
                                  env={**os.environ, "LINKLAB_RECORD_DIR": str(records)},
                                  timeout=600)
            while not running.done():
                markers |= {p.name.split(".jsonl")[0] for p in records.glob("*.jsonl*")}
                time.sleep(0.01)
        done = running.result()
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-3000:]
        passed = re.findall(r"test_cell\[([\w-]+)\] PASSED", out)
        assert {"scale-250-v4-pairs-icmp", "scale-250-v4-pairs-tcp-80"} <= set(passed), passed
        rows = [json.loads(line) for f in (tmp_path / "results").glob("*/connectivity.*.jsonl")
                for line in f.read_text().splitlines()]
        pairs = [r for r in rows if r["origin"] == "pairs"]
        assert len(pairs) == 2 * 250 * 252
        assert {r["outcome"] for r in pairs} == {"passed"}
        assert markers, "the run's ownership record was never seen"
        assert not [n for n in netns_names() if n[2:].split("-", 1)[0] in markers]
    finally:
        subprocess.run(["ip", "netns", "del", other], check=False)


@pytest.mark.connectivity
def test_all_pairs_option_checks_every_pair_from_expect(tmp_path: Path, user_scenarios,
                                                        run_pytest) -> None:
    d = user_scenarios()
    work = tmp_path / "work"
    work.mkdir()
    done = run_pytest(work, "-p", "no:xdist", "-m", "connectivity", "-v", "--all-pairs",
                      f"--scenarios={d}", "-k", "pairs")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert re.findall(r"test_cell\[([\w-]+)\] PASSED", out) == \
        ["mine-v4-pairs-icmp", "mine-v6-pairs-icmp"], out[-2000:]
