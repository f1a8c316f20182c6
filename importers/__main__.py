"""``python -m importers``: see :mod:`importers.run`."""

import sys

from .run import main

sys.exit(main())
