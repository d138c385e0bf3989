"""Unit tests: no root, no network namespace, no QEMU; seconds on any machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from linklab.anatomy import tracefs
from linklab.netns import NetNS

UNIT = Path(__file__).resolve().parent
# the plugin's fixtures that build (an ownership run under /run/linklab: root, namespaces)
LIVE_FIXTURES = frozenset({"run", "linklab_topology", "linklab_live", "linklab_matrix"})


@pytest.fixture(autouse=True)
def no_tracefs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Function scope, every unit test; monkeypatch. The machine's tracefs is out of reach
    (``ownership.clean`` would otherwise sweep its instances): a test that needs one mounts
    a fake (a directory) over ``tracefs.mounted`` itself."""
    def unreachable() -> None:
        raise tracefs.TracefsError("unit tests do not reach the kernel's tracefs")

    monkeypatch.setattr(tracefs, "mounted", unreachable)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test under tests/unit that asks for a fixture that builds is refused by name: it
    belongs in tests/live."""
    wrong = [f"{item.nodeid} ({', '.join(sorted(LIVE_FIXTURES & set(item.fixturenames)))})"
             for item in items if UNIT in item.path.parents
             and LIVE_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if wrong:
        raise pytest.UsageError("tests/unit may not build (root, namespaces); move to "
                                "tests/live: " + "; ".join(wrong))


@pytest.fixture
def no_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Function scope; monkeypatch. Creating a network namespace (``NetNS``) fails the test:
    what it exercises must decide before anything is built."""
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("a unit test created a network namespace: nothing may be built")

    monkeypatch.setattr(NetNS, "__init__", refuse)
