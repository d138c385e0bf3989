"""Moved to :mod:`linklab.twohost.peer`; this path stays for ``python -m linklab.peer`` and
for code importing ``linklab.peer`` (the name is an alias of the moved module)."""

import sys

from linklab.twohost import peer

if __name__ == "__main__":
    sys.exit(peer.main())
sys.modules[__name__] = peer
