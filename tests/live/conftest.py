"""Live tests: root, network namespaces, QEMU or a tool (clang, nft, dnsmasq, kea, vagrant,
chromium); a missing tool or kernel feature skips, naming it."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from linklab.nsfs import NETNS_DIR


def _netns_names() -> set[str]:
    return set(os.listdir(NETNS_DIR)) if os.path.isdir(NETNS_DIR) else set()


@pytest.fixture(scope="session")
def netns_names() -> Callable[[], set[str]]:
    """Session scope; none. ``netns_names()``: the named network namespaces now
    (``/run/netns``), every run's included (compare only a run's own, ``ll<marker>-*``, when
    xdist workers build meanwhile)."""
    return _netns_names
