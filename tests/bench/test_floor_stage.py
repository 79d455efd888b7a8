"""``bench.floor`` against the session's real Kafka: every piece is measured on a small mix, every
raw record comes back (``consume_all`` raises otherwise), and the idle Bytewax worker runs (a
change to the raw record, the decoder or Bytewax's runner breaks this test instead of
``make benchmarks``)."""

from __future__ import annotations

import pytest

from bench.floor import measure
from schemas.settings import Settings, load_config

pytestmark = pytest.mark.integration


def test_every_piece_of_the_floor_is_measured(stack: Settings) -> None:
    result = measure(load_config(), 600, rounds=1, idle_s=1.0)
    pieces = result["pieces_us_per_msg"]
    assert set(pieces) == {
        "raw_produce",
        "raw_consume",
        "decoding",
        "decoded_produce",
        "worker_idle",
    }
    assert all(value > 0 for value in pieces.values()), pieces
    assert 2.0 <= result["records_per_msg"] <= 3.0  # the decode mix: 70 % frames of 3 points
