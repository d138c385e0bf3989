"""Moved to :mod:`linklab.twohost.remote`; this path stays for ``python -m linklab.remote`` and
for code importing ``linklab.remote`` (the name is an alias of the moved module)."""

import sys

from linklab.twohost import remote

if __name__ == "__main__":
    sys.exit(remote.main())
sys.modules[__name__] = remote
