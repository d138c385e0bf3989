"""``python -m linklab.drill``."""

import sys

from linklab.drill.main import main

sys.exit(main())
