"""Root conftest: load the linklab pytest plugin (fixtures run, results, scenario_dir)."""

pytest_plugins = ["linklab.plugin"]
