"""Per-worker-thread values: one per thread and key, also on Bytewax's Rust-spawned worker threads.

The flow tests run two workers in one process (``cluster_main``, ``-w 2``): there every operator
call enters Python with a fresh thread state, so a ``threading.local`` forgets its values between
batches (asserted below, so the test shows the condition it guards against), while
:class:`PerThread` keeps one value per worker.
"""

from __future__ import annotations

import threading
from collections import Counter

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource, cluster_main

from connectors.per_thread import PerThread
from connectors.registry_store import RegistrySettings, thread_store
from connectors.timeseries_writer import StoreSettings, thread_submitter

BATCHES = 40


def test_one_value_per_thread_and_key() -> None:
    values: PerThread[object] = PerThread()
    first = values.get("a", object)
    assert values.get("a", object) is first
    assert values.get("b", object) is not first
    other: list[object] = []
    thread = threading.Thread(target=lambda: other.append(values.get("a", object)))
    thread.start()
    thread.join()
    assert other[0] is not first
    assert len(values) == 3


def _run_two_workers(step) -> list:  # type: ignore[no-untyped-def]
    """``step(batch)`` on two worker threads, ``BATCHES`` batches of one item spread over them."""
    out: list = []
    flow = Dataflow("per_thread_test")
    items = op.redistribute("spread", op.input("in", flow, TestingSource(range(BATCHES))))
    op.output("out", op.flat_map_batch("step", items, step), TestingSink(out))
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    return out


def test_worker_threads_keep_their_value_across_batches() -> None:
    kept: PerThread[object] = PerThread()
    local = threading.local()
    builds: Counter[str] = Counter()

    def build(kind: str) -> object:
        builds[kind] += 1
        return object()

    def step(batch: list[int]) -> list[tuple[int, int]]:
        value = kept.get("k", lambda: build("per_thread"))
        if getattr(local, "value", None) is None:
            local.value = build("threading_local")
        return [(threading.get_ident(), id(value)) for _ in batch]

    out = _run_two_workers(step)
    assert len(out) == BATCHES
    threads = {ident for ident, _ in out}
    assert builds["per_thread"] == len(threads) <= 2
    assert len(set(out)) == len(threads)  # one value per thread, every batch
    assert builds["threading_local"] > 2  # what PerThread is for


def test_writer_and_registry_store_are_built_once_per_worker() -> None:
    """The decode flow asks for its writer and registry store on every batch / batcher."""
    store_settings, registry_settings = StoreSettings(), RegistrySettings()

    def step(batch: list[int]) -> list[tuple[int, int, int]]:
        submit = thread_submitter("postgresql:///f2_per_thread_test", store_settings)
        store = thread_store("postgresql:///f2_per_thread_test", "redis://", registry_settings)
        return [(threading.get_ident(), id(submit), id(store)) for _ in batch]

    out = _run_two_workers(step)
    assert len(set(out)) == len({ident for ident, _, _ in out})
