"""Caches keyed by device input are bounded in bytes, however long or many the keys."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.caches import ENTRY_OVERHEAD_BYTES, ByteBoundedCache


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=300), max_size=300), st.integers(1_000, 50_000))
def test_a_cache_never_counts_more_than_its_bound(keys: list[str], bound: int) -> None:
    cache: ByteBoundedCache[str, int] = ByteBoundedCache(bound)
    for index, key in enumerate(keys):
        assert cache.put(key, index, len(key)) == index
        assert cache[key] == index
        assert cache.used_bytes <= max(bound, len(key) + ENTRY_OVERHEAD_BYTES)
        assert sum(len(k) + ENTRY_OVERHEAD_BYTES for k in cache) <= max(
            cache.used_bytes, len(key) + ENTRY_OVERHEAD_BYTES
        )
    cache.clear()
    assert cache.used_bytes == 0 and not cache
