"""``python -m linklab.cli``: the ``linklab`` command."""

import sys

from linklab.cli import main

sys.exit(main())
