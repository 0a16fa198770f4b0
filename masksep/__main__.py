"""``python -m masksep``: the CLI (how a Ray job runs the uploaded package)."""

import sys

from masksep.cli import main

sys.exit(main())
