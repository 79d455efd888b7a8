"""``python -m ops.cli``: the ``f2`` command."""

import sys

from ops.cli.main import main

sys.exit(main())
