"""The VM leg's parts (``pytest --vm``); the hooks that drive them are in
:mod:`linklab.pytest.vm`, the boot itself in :mod:`linklab.vm`.

``shard``     the selection split across guests, a scenario's cells kept together;
``bytecode``  the guests' ``.pyc`` files written on the host first;
``guests``    the guests' pytest command, and the guests booted side by side;
``junit``     the guests' JUnit files read, merged and replayed as this session's reports;
``phases``    where the leg's time goes: the guest's own marks, the leg's phases, the summary.
"""
