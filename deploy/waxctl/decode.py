"""The decode flow as the file Bytewax's Helm chart runs (``waxctl dataflow deploy decode.py``).

The code is the image's (or the tarball's, ``make waxctl-bundle``): this launcher is all the
chart's ConfigMap carries, and ``BYTEWAX_PYTHON_FILE_PATH`` names it. ``build_flow()`` reads the
settings from the environment (``F2_*``, secrets through ``*_FILE``); deploy it with recovery
(``--recovery``), see deploy/waxctl/README.md.
"""

from dataflows.decode import build_flow

flow = build_flow()
