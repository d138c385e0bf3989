"""Root conftest: load the linklab pytest plugins (fixtures run, results, scenario_dir; the
benchmark options --bench-*, which must be known before the arguments are parsed)."""

pytest_plugins = ["linklab.plugin", "linklab.benchplugin"]
