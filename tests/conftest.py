"""Helpers shared by ``tests/unit`` and ``tests/live``.

``tests/unit``: no root, no namespace, no QEMU; runs in seconds on any machine
(``pytest tests/unit``, ``make unit``). ``tests/live``: root, network namespaces, QEMU or
tools such as clang, nft, dnsmasq, vagrant and chromium. Both read :data:`tests.DATA`.

Each fixture's docstring says its scope and what it depends on; the linklab fixtures
(``run``, ``results``, ``linklab_topology``, ...) come from the plugin's entry point.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from linklab.model import SHIPPED, Scenario, load_scenario
from linklab.poll import poll as poll_until
from tests import LINKLAB, PYTEST, REPO


@functools.cache
def _shipped(name: str) -> Scenario:
    return load_scenario(SHIPPED / f"{name}.toml")


@pytest.fixture(scope="session")
def scenario() -> Callable[[str], Scenario]:
    """Session scope; none. ``scenario(name)``: the shipped scenario ``name``, loaded once
    (only the scenarios a test asks for: the VM leg's guests pay ~0.1 s per file)."""
    return _shipped


def _proc_state(pid: int) -> str:
    """The state letter of ``/proc/<pid>/stat`` (``R``, ``S``, ``Z``, ...), or ``gone``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"


@pytest.fixture(scope="session")
def process_state() -> Callable[[int], str]:
    """Session scope; none. ``process_state(pid)``: the process's state letter from
    ``/proc/<pid>/stat`` (``Z`` for a zombie), or ``"gone"``."""
    return _proc_state


def _poll(cond: Callable[[], object], timeout_s: float = 10.0, step_s: float = 0.05) -> bool:
    return bool(poll_until(cond, timeout_s, step_s))


@pytest.fixture(scope="session")
def poll() -> Callable[..., bool]:
    """Session scope; none. ``poll(cond, timeout_s=10)``: wait until ``cond()`` is true,
    checking every 50 ms; whether it became true (asked once more at the deadline)."""
    return _poll


@pytest.fixture(scope="session")
def linklab_cli() -> Callable[..., subprocess.CompletedProcess]:
    """Session scope; none. ``linklab_cli(*args, env=None, timeout=120)``: the ``linklab``
    command of this interpreter, run to completion, output captured as text, never raising on
    a non-zero exit."""
    def run(*args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*LINKLAB, *args], capture_output=True, text=True, env=env,
                              timeout=timeout, check=False)
    return run


@pytest.fixture
def without_expect(tmp_path: Path) -> Callable[[str], Path]:
    """Function scope; tmp_path. ``without_expect(name)``: the shipped ``veth.toml`` renamed
    ``name``, without its ``[expect]`` table (what ``linklab record`` fills in), in tmp_path."""
    def write(name: str) -> Path:
        text = (SHIPPED / "veth.toml").read_text()
        path = tmp_path / f"{name}.toml"
        path.write_text(text[:text.index("[expect]")].replace('name = "veth"', f'name = "{name}"'))
        return path
    return write


@pytest.fixture
def user_scenarios(tmp_path: Path) -> Callable[..., Path]:
    """Function scope; tmp_path. ``user_scenarios(name="mine")``: a user's scenario directory
    outside the repo (``tmp_path/scenarios``) holding the shipped ``veth.toml`` renamed
    ``name``."""
    def write(name: str = "mine") -> Path:
        d = tmp_path / "scenarios"
        d.mkdir(exist_ok=True)
        text = (SHIPPED / "veth.toml").read_text().replace('name = "veth"', f'name = "{name}"')
        (d / f"{name}.toml").write_text(text)
        return d
    return write


@pytest.fixture(scope="session")
def run_pytest() -> Callable[..., subprocess.CompletedProcess]:
    """Session scope; none. ``run_pytest(cwd, *args, env=None, timeout=300)``: a pytest session
    of this interpreter (the linklab plugin from its entry point) in ``cwd``, run to
    completion, output captured as text."""
    def run(cwd: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([*PYTEST, *args], cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=timeout, check=False)
    return run


@pytest.fixture(scope="session")
def ci_nightly() -> ModuleType:
    """Session scope; none. ``ci/nightly`` (a command: no .py suffix) imported as a module, to
    test its plan, gate and runners without running a night."""
    loader = importlib.machinery.SourceFileLoader("linklab_ci_nightly", str(REPO / "ci/nightly"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module      # its dataclasses look their module up by name
    loader.exec_module(module)
    return module
