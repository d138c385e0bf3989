"""Benchmarks: parametrise ``datapath`` over every datapath the ``--scenarios`` declare (the bench
plugin itself, ``linklab.pytest.bench``, is loaded through its entry point)."""

from __future__ import annotations

import pytest

from linklab.pytest import bench as benchplugin


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "datapath" not in metafunc.fixturenames:
        return
    from linklab.bench.datapaths import datapaths
    from linklab.model import ScenarioError
    from linklab.pytest.plugin import scenario_paths

    config = metafunc.config
    try:
        found = datapaths(scenario_paths(config))
    except ScenarioError as exc:
        raise pytest.UsageError(f"--scenarios: {exc}") from None
    wanted = benchplugin.selected_datapaths(config)   # validated in pytest_configure
    if wanted:
        found = [d for d in found if d.name in wanted]
    config.stash[benchplugin.DATAPATHS_KEY] = found
    metafunc.parametrize("datapath", found, ids=[d.name for d in found])
