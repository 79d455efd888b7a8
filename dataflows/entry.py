"""The entry point shared by the flows' factories: what a flow process does once at start.

It is the one place below the ``f2`` CLI where a flow process reads its environment: the settings
(:func:`schemas.settings.load_config`), and the Bytewax API server's variables it defaults (on, on
the flow's metrics port, its ``dataflow.json`` in the stack's run directory).
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

from connectors.logs import configure_logging
from schemas.settings import Config, load_config

GC_YOUNG_THRESHOLD = 10_000
"""Container allocations (net of frees) between young-generation collections (CPython's default:
700). Every message allocates dozens of short-lived objects that reference counting frees; only
cycles need the collector, which ran every few messages while a batch was alive. Decode's step
cost 1.8-2.3 µs/msg less with 10,000 (in-process, side by side, docs/PERFORMANCE-LOG.md,
2026-12-08); the cyclic garbage it can leave waiting is a few MB at most."""


def flow_entry(name: str) -> Config:
    """Read the settings, log JSON lines at the configured level, default the metrics API of
    flow ``name`` (``ingest`` or ``decode``), move what the imports built out of the garbage
    collector's sight (:func:`gc.freeze`) and collect young objects less often
    (:data:`GC_YOUNG_THRESHOLD`); the settings.

    The modules, classes and functions of the imports live as long as the process: without the
    freeze, every full collection walked all of them again (a fifth of decode's main thread at
    5,000 msg/s, docs/PERFORMANCE-LOG.md).
    """
    config = load_config()
    configure_logging(config.connections.log_level)
    port = config.ingest.metrics_port if name == "ingest" else config.decode.metrics_port
    os.environ.setdefault("BYTEWAX_DATAFLOW_API_ENABLED", "1")
    os.environ.setdefault("BYTEWAX_DATAFLOW_API_PORT", str(port))
    stack = config.connections.stack_dir
    if "BYTEWAX_DATAFLOW_API_CACHE_PATH" not in os.environ and stack:
        cache = Path(stack) / "run" / f"{name}-api"
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["BYTEWAX_DATAFLOW_API_CACHE_PATH"] = str(cache)
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)
    return config
