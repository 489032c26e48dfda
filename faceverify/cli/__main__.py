"""``python -m faceverify.cli`` — the same as the ``faceverify`` console script."""

import sys

from faceverify.cli import main

sys.exit(main())
