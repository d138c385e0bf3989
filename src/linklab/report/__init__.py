"""``linklab report``: one self-contained HTML page from a saved results directory.

aggregate (read and summarise, pandas) -> view (one view model: every table, chart spec and
verdict) -> render (Jinja2) and charts (matplotlib, inline SVG), which only format it; history
(``--history DIR``) does the same across runs. Reports are rebuilt from ``results/`` only,
never from a live run. The ``linklab report`` command is :mod:`linklab.cli.report`.
"""
