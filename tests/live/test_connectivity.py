"""The reachability matrix: every scenario of ``--scenarios`` (default: the shipped ones) x
family x check, expected results as data. The test itself ships with the plugin
(:mod:`linklab.pytest.matrix`); each topology is built once per scenario (module scope) and
its packet cells are observed in one batch."""

import pytest

from linklab.pytest.matrix import test_cell  # noqa: F401  (collected here)

pytestmark = pytest.mark.connectivity
