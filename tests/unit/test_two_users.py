"""Two users at once (issue #24): what two simultaneous ``make test`` / ``make report`` runs,
in one checkout or two, must never share: run ids, the setup (apt, the virtualenv), the code a
guest runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from linklab import ownership, vm

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


def _fake_checkout(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A checkout with scripts/setup, every Debian package 'installed' (a dpkg-query stub)
    and a fake python whose ``-m venv`` and pip note when two of them overlap."""
    repo, stubs, log = tmp / "repo", tmp / "bin", tmp / "log"
    for d in (repo / "scripts", stubs, log):
        d.mkdir(parents=True)
    shutil.copy(ROOT / "scripts/setup", repo / "scripts/setup")
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    busy = textwrap.dedent(f"""\
        mkdir {log}/busy 2>/dev/null || echo "$0 $*" >>{log}/overlap
        echo "$0 $*" >>{log}/calls
        sleep 0.4
        rmdir {log}/busy 2>/dev/null || true
        """)
    (stubs / "dpkg-query").write_text("#!/bin/sh\necho 'install ok installed'\n")
    (stubs / "python").write_text("#!/bin/sh\n" + busy + textwrap.dedent(f"""\
        if [ "$1 $2" = "-m venv" ]; then
          mkdir -p "$3/bin"; cp {stubs}/pip "$3/bin/pip"; cp {stubs}/pip "$3/bin/python"
        fi
        """))
    (stubs / "pip").write_text("#!/bin/sh\n" + busy)
    for f in stubs.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "PYTHON": str(stubs / "python"),
           "LINKLAB_SETUP_LOCK": str(tmp / "setup.lock")}
    return repo, env


@pytest.mark.skipif(shutil.which("flock") is None, reason="flock (util-linux) is not installed")
def test_two_setups_at_once_create_the_venv_once(tmp_path: Path) -> None:
    """Two ``make setup`` at once in one checkout: one creates the virtualenv and installs into
    it, the other waits and finds it done (without the lock both ran ``venv`` and ``pip`` into
    the same directory at the same time)."""
    repo, env = _fake_checkout(tmp_path)
    procs = [subprocess.Popen(["bash", str(repo / "scripts/setup")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert not (tmp_path / "log/overlap").exists(), (tmp_path / "log/overlap").read_text()
    calls = (tmp_path / "log/calls").read_text().splitlines()
    assert sum(" -m venv " in c for c in calls) == 1, calls
    assert sum("install -q -e" in c for c in calls) == 1, calls


def test_guest_env_carries_pythonpath(monkeypatch: pytest.MonkeyPatch) -> None:
    """A second checkout run with the first one's virtualenv (PYTHONPATH=<clone>/src): its
    guests import the clone's linklab too (they start from a clean environment and imported
    the first checkout's through the venv's editable install)."""
    monkeypatch.setenv("PYTHONPATH", "/tmp/llu-clone/src")
    assert vm.guest_env("tcg", None)["PYTHONPATH"] == "/tmp/llu-clone/src"
    monkeypatch.delenv("PYTHONPATH")
    assert "PYTHONPATH" not in vm.guest_env("tcg", None)


def test_a_random_marker_skips_one_whose_namespaces_exist(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A run recorded in another record directory (a second user's, a test's child session)
    owns ll1a2b-host: a new run here does not take 1a2b (its namespaces would collide)."""
    netns, records = tmp_path / "netns", tmp_path / "records"
    netns.mkdir()
    records.mkdir()
    (netns / "ll1a2b-host").touch()
    monkeypatch.setattr(ownership, "NETNS_DIR", str(netns))
    monkeypatch.setattr(ownership, "RECORD_DIR", str(records))
    tokens, real = iter(["1a2b", "3c4d"]), ownership.secrets.token_hex
    monkeypatch.setattr(ownership.secrets, "token_hex",      # markers are 2 bytes
                        lambda n: next(tokens) if n == 2 else real(n))
    run = ownership.Run()
    try:
        assert run.marker == "3c4d"
        assert sorted(p.name for p in records.iterdir()) == ["3c4d.jsonl"]
    finally:
        run.close()
