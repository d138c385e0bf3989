"""Unit tests: no root, no network namespace, no QEMU; seconds on any machine."""

from __future__ import annotations

import pytest

from linklab.netns import NetNS


@pytest.fixture
def no_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Function scope; monkeypatch. Creating a network namespace (``NetNS``) fails the test:
    what it exercises must decide before anything is built."""
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("a unit test created a network namespace: nothing may be built")

    monkeypatch.setattr(NetNS, "__init__", refuse)
