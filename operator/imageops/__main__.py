"""``python -m imageops``."""

import sys

from imageops.cli import main

sys.exit(main())
