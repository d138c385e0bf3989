"""Benchmarks: parametrise ``datapath`` over every datapath the scenarios declare (the bench
plugin itself, ``linklab.pytest.bench``, is loaded through its entry point)."""

from __future__ import annotations

import pytest

from linklab.pytest import bench as benchplugin


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "datapath" not in metafunc.fixturenames:
        return
    from linklab.bench.datapaths import datapaths

    config = metafunc.config
    found = datapaths(config.getoption("--scenarios"))
    wanted = benchplugin.selected_datapaths(config)   # validated in pytest_configure
    if wanted:
        found = [d for d in found if d.name in wanted]
    config.stash[benchplugin.DATAPATHS_KEY] = found
    metafunc.parametrize("datapath", found, ids=[d.name for d in found])
