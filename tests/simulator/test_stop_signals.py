"""``stop_on_signals``: SIGTERM and SIGINT become a clean-stop request for as long as the context
lasts, nested contexts stack, and the process's own handlers come back afterwards."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from simulator.load import STOP_SIGNALS, stop_on_signals


def _deliver(sig: signal.Signals) -> None:
    os.kill(os.getpid(), sig)
    time.sleep(0.01)  # Python runs handlers between bytecodes; give it a few


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_a_signal_inside_sets_the_event_and_the_process_lives_on(sig: signal.Signals) -> None:
    before = signal.getsignal(sig)
    with stop_on_signals() as stop:
        assert not stop.is_set()
        _deliver(sig)
        assert stop.is_set()
    assert signal.getsignal(sig) is before


def test_nested_contexts_hand_the_signal_back_to_the_outer_one() -> None:
    with stop_on_signals() as outer:
        with stop_on_signals() as inner:
            _deliver(signal.SIGTERM)
            assert inner.is_set() and not outer.is_set()
        _deliver(signal.SIGTERM)  # the inner run is over: the outer scope still catches it
        assert outer.is_set()


def test_an_event_given_is_the_one_set() -> None:
    mine = threading.Event()
    with stop_on_signals(mine) as stop:
        assert stop is mine
        _deliver(signal.SIGINT)
    assert mine.is_set()


def test_a_signal_arriving_while_the_event_is_being_set_does_not_set_it_again() -> None:
    """A multiprocessing event's lock is not reentrant: a second signal handled inside
    ``set()`` (Python runs handlers between any two bytecodes) recursed into it until the
    simulator died (CI, 2026-12-07)."""

    class Setting:
        calls = 0

        def set(self) -> None:
            self.calls += 1
            if self.calls == 1:
                _deliver(signal.SIGTERM)  # the next signal lands inside this set()

        def is_set(self) -> bool:
            return self.calls > 0

    event = Setting()
    with stop_on_signals(event):  # type: ignore[arg-type]
        _deliver(signal.SIGTERM)
    assert event.calls == 1
