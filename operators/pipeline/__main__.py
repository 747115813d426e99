"""``python -m operators.pipeline lint|render|plan``: see operators/pipeline/cli.py."""

import sys

from operators.pipeline.cli import main

sys.exit(main())
