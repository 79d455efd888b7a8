"""Running the fleet: one or more workers (processes, each with its own MQTT connection) share
the fleet's sources and an aggregate target rate; the parent prints the achieved rate every few
seconds and at the end, and merges the workers' tallies into the report.

Pacing: a worker emits message ``k`` at ``start + k / rate``, cycling over its sources (a sensor
or an event connector each). Without ``--rate`` the rate is ``sources / interval``, i.e. every
sensor sends one frame per interval like the real device (30 s). A worker that falls more than a
second behind re-bases its schedule instead of bursting; it then runs as fast as it can, which is
how load mode finds a ceiling. A stop request (SIGTERM, Ctrl-C, ``--duration``) ends the schedule;
each worker then waits for its outstanding acknowledgements and reports its tally.

Clients: with ``--rate`` (load mode) a worker publishes through :mod:`simulator.fastmqtt`, a raw
socket MQTT v5 client that keeps up with the broker (paho in Python tops out near 9k msg/s per
process); otherwise through the paho-based :class:`~simulator.publisher.Publisher`, like a device.
Both count only acknowledged messages and answer ``cmnd/`` requests. They log in as the stack's
test-rig user, or, given per-controller credentials (``--device-credentials``), through
:class:`~simulator.devices.DevicePublishers`: one connection per controller of the worker, each as
that controller's own user.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import msgspec

from schemas.settings import Settings
from schemas.topics import TopicInfo, parse_topic
from simulator.devices import DevicePublishers
from simulator.fastmqtt import FastPublisher
from simulator.faults import FaultMaker
from simulator.fleet import Fleet
from simulator.messages import (
    BatchClock,
    EventSource,
    Outgoing,
    Send,
    SensorSource,
    Source,
    build_sources,
    outgoing_sender,
)
from simulator.publisher import Command, Publisher
from simulator.report import Tally

log = logging.getLogger("f2.simulator")
MAX_LAG_S = 1.0
LOAD_PACE_S = 0.005
"""Load mode's pacing step: a worker ahead of its schedule waits at least this long, then sends
every message that fell due meanwhile in one write (each stamped with the time it is sent). At
5,000 msg/s a wake-up per message cost the simulator ~97 µs and the broker ~42 µs per message;
with 5 ms steps 36 and 31 (docs/PERFORMANCE-LOG.md). Without ``--rate`` (device mode) every
message is sent when it is due."""
SERVICE_EVERY = 32  # messages between network services when behind schedule (paho)
FAST_SERVICE_EVERY = 512  # the same for the raw socket client: one write per ~64 KB
PROGRESS_S = 1.0

AnyPublisher = Publisher | FastPublisher | DevicePublishers


class RunConfig(msgspec.Struct, frozen=True):
    """How to run the fleet (the command line's options)."""

    qos: int = 1
    interval: float = 30.0
    rate: float | None = None
    duration: float | None = None
    faults: float = 0.0
    processes: int = 1
    seed: int = 0
    alias_rate: float = 0.1
    window: int = 1000
    progress_s: float = 5.0
    drain_s: float = 10.0


class WorkerResult(msgspec.Struct):
    """What a worker reports when it ends."""

    index: int
    tally: Tally
    publishing_s: float
    unacked: int
    error: str | None = None


class _Event(Protocol):
    def is_set(self) -> bool: ...
    def set(self) -> None: ...
    def wait(self, timeout: float | None = None) -> bool: ...


class _Queue(Protocol):
    def put(self, item: Any) -> None: ...
    def get(self, block: bool = True, timeout: float | None = None) -> Any: ...


def worker_rate(config: RunConfig, sources: int) -> float:
    """Messages per second one worker aims at."""
    if config.rate:
        return config.rate / config.processes
    return sources / config.interval


def make_publisher(
    config: RunConfig,
    settings: Settings,
    client_id: str,
    credentials: dict[str, str] | None = None,
) -> AnyPublisher:
    """The raw socket client in load mode (``rate`` set), else the paho-based device client;
    with ``credentials`` (MAC → password) one of those per controller, as its own user."""
    if credentials is not None:
        return DevicePublishers(
            settings,
            credentials,
            config.qos,
            lambda device, name: make_publisher(config, device, name),
        )
    if config.rate:
        return FastPublisher(settings, client_id, config.qos)
    return Publisher(settings, client_id, config.qos, config.window)


def run_worker(
    config: RunConfig,
    fleet: Fleet,
    settings: Settings,
    index: int,
    stop: _Event,
    out: _Queue,
    credentials: dict[str, str] | None = None,
) -> None:
    """Publish this worker's share of the fleet's sources until stopped; its result to ``out``.
    With ``credentials`` (MAC → password) each of its controllers connects as its own user."""
    started = time.monotonic()
    sources = build_sources(fleet, config.alias_rate, index, config.processes)
    if credentials is not None:
        macs = {source.mac for source in sources}
        credentials = {mac: pw for mac, pw in credentials.items() if mac in macs}
    client_id = f"f2-sim-{os.getpid()}-{index}-{fleet.seed}"
    publisher = make_publisher(config, settings, client_id, credentials)
    try:
        publisher.connect()
    except (ConnectionError, OSError) as exc:
        out.put(WorkerResult(index, Tally(), 0.0, 0, str(exc)))
        return
    events = {(s.mac, s.connector.name): s for s in sources if isinstance(s, EventSource)}
    publisher.subscribe_commands(sorted({mac for mac, _ in events}))
    out.put(("ready", index))
    started = time.monotonic()
    try:
        _publish_loop(config, fleet, sources, events, publisher, index, stop, out)
    finally:
        publishing_s = time.monotonic() - started
        unacked = publisher.drain(config.drain_s)
        publisher.close()
        out.put(WorkerResult(index, publisher.tally, publishing_s, unacked))


def _publish_loop(
    config: RunConfig,
    fleet: Fleet,
    sources: list[Source],
    events: dict[tuple[str, str], EventSource],
    publisher: AnyPublisher,
    index: int,
    stop: _Event,
    out: _Queue,
) -> None:
    """The paced publishing loop of one worker.

    Between two network services it sends the messages already due (at most ``every``, and at
    most one per source) in one tight batch; ahead of schedule in load mode, it first lets
    :data:`LOAD_PACE_S` pass. The batch's messages are all stamped with its start
    (:class:`~simulator.messages.BatchClock`: one time formatted per clock zone, not per message).
    """
    if not sources:
        deadline = time.monotonic() + (config.duration or float("inf"))
        while not stop.is_set() and time.monotonic() < deadline:
            publisher.service(0.2)
        return
    clock = BatchClock()
    for source in sources:
        source.bind(clock)
    send, count = _sender(publisher), len(sources)
    emits = [source.emit_stamped for source in sources]
    sensors = [s for s in sources if isinstance(s, SensorSource)] or [
        s for s in build_sources(fleet) if isinstance(s, SensorSource)
    ]
    rng = random.Random(f"f2-faults-{fleet.seed}-{index}")
    faults = FaultMaker(fleet.ghost_macs, f"f2-faults-{fleet.seed}-{index}")
    fault_rate = config.faults
    period = 1.0 / worker_rate(config, len(sources))
    begin = time.monotonic()
    deadline = begin + config.duration if config.duration else float("inf")
    base, k, send_at = begin, 0, begin
    every = FAST_SERVICE_EVERY if config.rate else SERVICE_EVERY
    pace = LOAD_PACE_S if config.rate else 0.0
    last_progress, next_service = begin, 0
    wall_time = time.time
    while True:
        now = time.monotonic()
        due = base + k * period
        if due > now or k >= next_service:
            if stop.is_set() or now >= deadline:
                break
            if due > now and send_at <= now:  # ahead of schedule: the next send
                send_at = max(due, now + pace)
            publisher.service(max(0.0, min(send_at - now, deadline - now, 0.2)))
            _answer_commands(publisher, events)
            if now - last_progress >= PROGRESS_S:
                out.put(("progress", index, publisher.tally.published))
                last_progress = now
            next_service = k + every
            if send_at > time.monotonic():
                continue
        if now - due > MAX_LAG_S:
            base = now - k * period
        batch = max(1, min(next_service - k, int((now - base) / period) + 1 - k, count))
        clock.tick(wall_time())
        if fault_rate:
            for _ in range(batch):
                if rng.random() < fault_rate:
                    publisher.publish(faults.make(rng.choice(sensors), wall_time()))
                else:
                    emits[k % count](send)
                k += 1
        else:  # the sources due, as one or two slices of the rotation
            first = k % count
            for emit in emits[first : first + batch]:
                emit(send)
            if first + batch > count:
                for emit in emits[: first + batch - count]:
                    emit(send)
            k += batch


def _sender(publisher: AnyPublisher) -> Send:
    """Where sources hand their messages: the raw socket client's :meth:`~FastPublisher.send`
    (load mode's hot path, no :class:`Outgoing` per message), else ``publish`` of an
    :class:`Outgoing`."""
    if isinstance(publisher, FastPublisher):
        return publisher.send
    return outgoing_sender(publisher.publish)


def _answer_commands(publisher: AnyPublisher, events: dict[tuple[str, str], EventSource]) -> None:
    """Answer received ``cmnd/…`` messages like a controller (see ``EventStream.command``)."""
    for command in publisher.take_commands():
        for answer in answers(command, events):
            publisher.publish(answer)


def answers(command: Command, events: dict[tuple[str, str], EventSource]) -> list[Outgoing]:
    """The messages that answer ``command`` (none if it is not for one of ``events``)."""
    info = parse_topic(command.topic)
    if not isinstance(info, TopicInfo) or info.type != "cmnd":
        return []
    source = events.get((info.mac, info.connector))
    if source is None or source.connector.mode != info.mode:
        return []
    replies = source.stream.command(info.component, command.payload, info.success)
    now = time.time()
    return [source.outgoing(reply, now) for reply in replies]


class RunSummary(msgspec.Struct):
    """The merged outcome of a run."""

    tally: Tally
    publishing_s: float
    achieved_rate: float
    unacked: int
    errors: list[str]


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_fleet(
    config: RunConfig,
    fleet: Fleet,
    settings: Settings,
    say: Callable[[str], None] = print,
    credentials: dict[str, str] | None = None,
) -> RunSummary:
    """Run the fleet with ``config.processes`` workers until the duration ends or a stop signal
    (SIGTERM/SIGINT) arrives; print progress through ``say``; return the merged tallies.
    With ``credentials`` (MAC → password) every controller connects as its own user."""
    worker_args = (config, fleet, settings)
    if config.processes == 1:
        stop: _Event = threading.Event()
        results: _Queue = queue.Queue()
        workers: list[Any] = [
            threading.Thread(
                target=run_worker, args=(*worker_args, 0, stop, results, credentials), daemon=True
            )
        ]
    else:
        context = multiprocessing.get_context("fork")
        stop = context.Event()
        results = context.Queue()
        workers = [
            context.Process(
                target=run_worker, args=(*worker_args, i, stop, results, credentials), daemon=True
            )
            for i in range(config.processes)
        ]
    with stop_on_signals(stop):
        try:
            for worker in workers:
                worker.start()
            return _collect(config, results, stop, say)
        finally:
            # A stop signal arriving inside set() would run its handler on the event's lock.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                stop.set()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            for worker in workers:
                worker.join(config.drain_s + 5)


def _collect(
    config: RunConfig, results: _Queue, stop: _Event, say: Callable[[str], None]
) -> RunSummary:
    """Gather progress and results from the workers; print the achieved rate as it goes."""
    begin = time.monotonic()
    counts: dict[int, int] = {}
    finished: list[WorkerResult] = []
    last_print, last_total = begin, 0
    while len(finished) < config.processes:
        try:
            item = results.get(timeout=0.5)
        except queue.Empty:
            item = None
        if isinstance(item, WorkerResult):
            finished.append(item)
            counts[item.index] = item.tally.published
            if item.error:
                say(f"worker {item.index} failed: {item.error}")
                stop.set()
        elif isinstance(item, tuple) and item[0] == "progress":
            counts[item[1]] = item[2]
        now = time.monotonic()
        if now - last_print >= config.progress_s:
            total = sum(counts.values())
            say(
                f"[{now - begin:7.1f} s] published {total}"
                f"  now {(total - last_total) / (now - last_print):9.1f} msg/s"
                f"  avg {total / (now - begin):9.1f} msg/s"
            )
            last_print, last_total = now, total
    tally = Tally()
    for result in finished:
        tally.merge(result.tally)
    publishing_s = max((r.publishing_s for r in finished), default=0.0)
    rate = tally.published / publishing_s if publishing_s > 0 else 0.0
    errors = [r.error for r in finished if r.error]
    unacked = sum(r.unacked for r in finished)
    say(
        f"done: published {tally.published} in {publishing_s:.1f} s = {rate:.1f} msg/s"
        f" (QoS {config.qos}, {config.processes} process(es), {tally.rejected} refused,"
        f" {unacked} unacknowledged)"
    )
    if tally.refused:
        refused = ", ".join(f"{label} {n}" for label, n in sorted(tally.refused.items()))
        say(f"refused by the broker (not in the report): {refused}")
    return RunSummary(tally, publishing_s, rate, unacked, errors)


def stop_on_signals_until_exit() -> _Event:
    """From now until the process ends, SIGTERM and SIGINT set the returned event instead of
    ending the process (main thread only): for a command line that must still write its report
    when a stop request arrives just as its run ends. :func:`stop_on_signals` nests inside. At
    exit they are ignored, since the interpreter's teardown would restore the default (fatal)
    action for the last few instructions."""
    event = threading.Event()
    if threading.current_thread() is threading.main_thread():
        handler = _requester(event)
        for sig in STOP_SIGNALS:
            signal.signal(sig, handler)
        atexit.register(_ignore_stop_signals)
    return event


def _requester(event: _Event) -> Callable[[int, Any], None]:
    """A signal handler that sets ``event`` once. Python runs a handler between two bytecodes
    of the main thread, also inside an earlier handler or inside ``event.set()``, whose lock is
    not reentrant (a multiprocessing event's): a second signal must not reach it again."""
    fired = [False]

    def request(_sig: int, _frame: Any) -> None:
        if not fired[0]:
            fired[0] = True
            event.set()

    return request


def _ignore_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextmanager
def stop_on_signals(stop: _Event | None = None) -> Iterator[_Event]:
    """While inside, SIGTERM and SIGINT set ``stop`` (a clean-stop request; a fresh event if
    none is given) instead of ending the process; on leaving, the previous handlers are back.
    Nested uses stack: the innermost sets its event, and after it the outer one catches again.
    Only the main thread can install handlers; elsewhere this does nothing but yield ``stop``."""
    event: _Event = stop if stop is not None else threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    handler = _requester(event)
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield event
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
