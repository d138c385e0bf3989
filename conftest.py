"""Root conftest: nothing to load: the linklab pytest plugins come from their entry points
(pyproject.toml, ``[project.entry-points.pytest11]``)."""
