"""``python -m operators.sites``: the ``factory sites`` table."""

import sys

from operators.sites.cli import main

sys.exit(main())
