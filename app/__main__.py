"""``python -m eeghub`` is ``eeghub``."""

import sys

from .cli import main

sys.exit(main())
