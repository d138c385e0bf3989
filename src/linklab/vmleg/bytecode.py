"""The guests' ``.pyc`` files, written on the host before they boot: the guests see the
host's files read-only, so a ``.pyc`` compiled in a guest (~10 s per guest under TCG) is
never kept."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys

import pytest

import linklab


class ImportAll:
    """In the warm-up session: import every linklab module under pytest's assertion rewriting
    (the plugin's distribution is rewritten), so each gets its rewritten ``.pyc``."""

    @staticmethod
    def pytest_collection_finish(session: pytest.Session) -> None:
        for mod in pkgutil.walk_packages(linklab.__path__, "linklab.", onerror=lambda _n: None):
            if mod.name.endswith(".__main__"):
                continue  # running it is what importing it does
            try:
                importlib.import_module(mod.name)
            except Exception:  # a module that cannot load here is compiled in the guest
                pass


def warm_bytecode(nodeids: list[str], extra: list[str]) -> None:
    """Write the ``.pyc`` files the guests would otherwise compile under TCG: collect the
    selection once here with bytecode writing on (``PYTHONDONTWRITEBYTECODE`` set, as in many
    CI images, would leave every guest compiling every module). Best effort: a failure here
    only costs the guests time."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    code = ("import sys, pytest; from linklab.vmleg.bytecode import ImportAll; "
            "sys.exit(pytest.main(sys.argv[1:], plugins=[ImportAll()]))")
    subprocess.run([sys.executable, "-c", code, "--collect-only", "-q", "-p",
                    "no:cacheprovider", *extra, *nodeids], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
