"""linklab's reachability matrix over our scenarios (every cell of scenarios/*.toml against
its [expect] table), collected here so its ids read test_matrix.py::test_cell[tenants-...]."""

from linklab.pytest.matrix import test_cell  # noqa: F401
