"""The flows' shared entry point (``dataflows.entry``)."""

from __future__ import annotations

import gc

import pytest

from dataflows.entry import flow_entry


def test_the_entry_point_freezes_what_the_imports_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("F2_STACK_DIR", str(tmp_path))
    for name, value in (("PORT", "0"), ("ENABLED", "0"), ("CACHE_PATH", str(tmp_path))):
        monkeypatch.setenv(f"BYTEWAX_DATAFLOW_API_{name}", value)  # restored after the test
    gc.unfreeze()
    try:
        flow_entry("decode")
        assert gc.get_freeze_count() > 1000  # the modules, classes and functions loaded so far
    finally:
        gc.unfreeze()
