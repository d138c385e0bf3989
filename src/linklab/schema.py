"""Moved to :mod:`linklab.cli.schema` (the ``linklab schema`` command); this path stays for
code that imports ``linklab.schema``."""

import sys

from linklab.cli import schema

sys.modules[__name__] = schema
