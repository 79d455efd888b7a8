"""``python -m simulator``: the F2 fleet simulator (see :mod:`simulator.cli`)."""

import logging
import sys

from simulator.cli import main

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
sys.exit(main())
