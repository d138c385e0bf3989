"""linklab's own tests, split by what they need: ``unit/`` (no root, no namespace, no QEMU:
seconds on any machine, ``make unit``) and ``live/`` (root, network namespaces, QEMU, tools).
Both read the saved files under :data:`DATA`; shared fixtures live in ``conftest.py``."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"   # saved tool output (bench/), results-sample/, vagrant/
LINKLAB = (sys.executable, "-m", "linklab.cli")   # the linklab command of this interpreter
PYTEST = (sys.executable, "-m", "pytest", "-p", "no:cacheprovider")   # and its pytest
