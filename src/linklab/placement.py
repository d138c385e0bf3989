"""Moved to :mod:`linklab.twohost.placement`; this path stays for code importing
``linklab.placement`` (the name is an alias of the moved module)."""

import sys

from linklab.twohost import placement

sys.modules[__name__] = placement
