"""``python -m tgi.emulator`` (or ``python3 -m emulator`` in the test image)."""

import sys

from .cli import main

sys.exit(main())
