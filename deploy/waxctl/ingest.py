"""The ingest flow as the file Bytewax's Helm chart runs (``waxctl dataflow deploy ingest.py``).

The code is the image's (or the tarball's, ``make waxctl-bundle``): this launcher is all the
chart's ConfigMap carries, and ``BYTEWAX_PYTHON_FILE_PATH`` names it. ``build_flow()`` reads the
settings from the environment (``F2_*``, secrets through ``*_FILE``); see deploy/waxctl/README.md.
"""

from dataflows.ingest import build_flow

flow = build_flow()
