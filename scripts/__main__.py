"""``python -m scripts <command>``: the pipeline's one entry point."""

import sys

from scripts.cli import main

sys.exit(main())
