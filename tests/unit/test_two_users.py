"""Two users at once (issue #24): what two simultaneous ``make test`` / ``make report`` runs,
in one checkout or two, must never share: run ids."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRINT_IDS = "llu-ids: ; @echo $(TEST_RUN_ID) $(REPORT_RUN_ID)"


def _make_ids(n: int) -> list[list[str]]:
    """``n`` make invocations started at once: each one's test and report run ids."""
    env = {k: v for k, v in os.environ.items() if k != "LINKLAB_RUN_ID"}
    procs = [subprocess.Popen(["make", "-s", "--no-print-directory", "-C", str(ROOT),
                               "--eval", PRINT_IDS, "llu-ids"], stdout=subprocess.PIPE,
                              text=True, env=env) for _ in range(n)]
    return [p.communicate(timeout=30)[0].split() for p in procs]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_run_ids_differ_within_one_second() -> None:
    """Two makes started in the same second get different run ids (the second-resolution id
    alone put both users' rows and JUnit files into one results directory)."""
    for _ in range(5):   # until both started within one second (nearly always the first try)
        a, b = _make_ids(2)
        if a[0].split("-")[0] == b[0].split("-")[0]:
            break
    assert a[0].split("-")[0] == b[0].split("-")[0], "never two makes within one second"
    assert a[0] != b[0] and a[1] != b[1]
    assert a[0].split("-")[1] == "make" and a[1].split("-")[1] == "report"


def test_make_run_id_override_is_kept() -> None:
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(ROOT), "--eval",
                          PRINT_IDS, "llu-ids"], capture_output=True, text=True, check=True,
                         env={**os.environ, "LINKLAB_RUN_ID": "mine"}).stdout.split()
    assert out == ["mine", "mine"]
