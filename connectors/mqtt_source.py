"""MQTT v5 as a Bytewax source: K persistent sessions, shared subscriptions, acked after the epoch.

Delivery guarantee: at-least-once. Each source partition ``s<i>`` is one MQTT v5 session with a
stable client id (``<prefix>-s<i>``), ``clean_start=False`` and a session expiry, subscribed with
QoS 1 to ``$share/<group>/<filter>`` and ``manual_ack``. A message is acknowledged only on the
first ``next_batch()`` after the ``snapshot()`` that closed the epoch it was emitted in, which
Bytewax 0.21 calls only once every output finished that epoch; the checked Kafka sink finishes an
epoch only when Kafka stored all of it. So nothing is acknowledged before Kafka stored it; a crash
re-delivers what was not acknowledged (duplicates, never gaps).

Memory is bounded in bytes: while the payloads a process holds exceed ``F2_INGEST_MAX_BUFFER_BYTES``
every session stops reading its socket (``f2_ingest_read_paused``); QoS 1 messages wait at the
broker. The broker sends at most ``receive_maximum`` unacknowledged messages per session.

Lost sessions are alarms: a durable marker per session it created (``F2_INGEST_STATE_DIR``) until
:func:`forget_sessions` deletes it; a marked session answered as new is counted
(``f2_ingest_sessions_lost_total``), timed and logged.

Emits :class:`schemas.records.RawMessage`. :class:`LeanClient` and :func:`send_pubacks` are the
hot path (why, measured: docs/ARCHITECTURE.md, D3, D4, D8).
"""

from __future__ import annotations

import logging
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import paho.mqtt.client as mqtt
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from paho.mqtt.client import _ConnectionState
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter, Gauge

from connectors.failures import BLOCKED
from schemas.records import RawMessage
from schemas.settings import IngestSettings, Settings

log = logging.getLogger("f2.ingest")

RECEIVED = Counter("f2_ingest_received", "MQTT messages emitted into the flow", ["partition"])
ACKED = Counter("f2_ingest_acked", "MQTT messages acknowledged (PUBACK sent)", ["partition"])
ACKS_SKIPPED = Counter(
    "f2_ingest_acks_skipped",
    "Acks not sent because the message came on an earlier connection (broker re-sends it)",
    ["partition"],
)
UNACKED = Gauge(
    "f2_ingest_unacked", "Messages received from MQTT and not yet acknowledged", ["partition"]
)
CONNECTED = Gauge(
    "f2_ingest_mqtt_connected", "1 while the MQTT session is connected", ["partition"]
)
CONNECTS = Counter(
    "f2_ingest_mqtt_connects", "MQTT connection attempts by result", ["partition", "result"]
)
BUFFER_BYTES = Gauge(
    "f2_ingest_buffer_bytes",
    "Payload bytes held by the process: received and not yet acknowledged (QoS 0: not yet past"
    " their epoch)",
)
READ_PAUSED = Gauge(
    "f2_ingest_read_paused",
    "1 while the session does not read from the broker (the process holds more than"
    " F2_INGEST_MAX_BUFFER_BYTES)",
    ["partition"],
)
SESSIONS_LOST = Counter(
    "f2_ingest_sessions_lost",
    "Sessions ingest had created that the broker answered with a new, empty session (queued"
    " messages lost)",
    ["partition"],
)
SESSION_LOST_TIME = Gauge(
    "f2_ingest_session_lost_time_seconds",
    "When the session was last found lost (Unix time; 0 = never in this process)",
    ["partition"],
)
READ_PAUSES = Counter(
    "f2_ingest_read_pauses", "Times the session stopped reading for the byte limit", ["partition"]
)

RECONNECT_DELAY_S = (1, 30)
_IDLE = timedelta(milliseconds=10)
PAUSE_POLL_S = 0.02
READ_CHUNK = 65536
"""Bytes one socket read of :class:`LeanClient` asks for."""
CHECK_SHARE = 64
"""A session sums the process's held bytes after receiving each 1/64 of the budget (so the
process may pass its limit by about sessions × (budget/64 + a read chunk + a packet):
docs/ARCHITECTURE.md D8)."""
BATCH_SHARE = 8
"""A source batch stops once it holds ``F2_INGEST_MAX_BUFFER_BYTES / BATCH_SHARE`` of payloads:
the Kafka producer and the retries copy a batch, so a batch is kept to a share of the budget."""
# MQTT v5 PUBACK with the implied "success" reason: 0x40, remaining length 2, packet id.
_PUBACK = 0x4002_0000


class MqttSourceSettings(msgspec.Struct, frozen=True):
    """The ingest source's knobs (``F2_INGEST_*``) plus the MQTT connection settings."""

    host: str
    port: int
    username: str
    password: str
    partitions: int = 4
    share_group: str = "f2-ingest"
    client_prefix: str = "f2-ingest"
    topic_filters: tuple[str, ...] = ("stat/#", "tele/#")
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 20000
    batch_size: int = 2000
    batch_wait_ms: int = 50
    read_wait_ms: int = 50
    keepalive_s: int = 30
    tls: bool = False
    ca_file: str = ""
    max_buffer_bytes: int = 64 << 20
    state_dir: str = ""


def source_settings(settings: Settings, ingest: IngestSettings) -> MqttSourceSettings:
    """The source's settings: the broker connection from ``settings``, the rest from ``ingest``."""
    return MqttSourceSettings(
        host=settings.mqtt_host,
        port=settings.mqtt_port,
        username=settings.mqtt_username,
        password=settings.mqtt_password,
        partitions=ingest.partitions,
        share_group=ingest.share_group,
        client_prefix=ingest.client_prefix,
        topic_filters=ingest.topic_filters,
        session_expiry_s=ingest.session_expiry_s,
        receive_maximum=ingest.receive_maximum,
        batch_size=ingest.batch_size,
        batch_wait_ms=ingest.batch_wait_ms,
        read_wait_ms=ingest.read_wait_ms,
        keepalive_s=ingest.keepalive_s,
        max_buffer_bytes=ingest.max_buffer_bytes,
        state_dir=ingest.state_dir,
        tls=settings.mqtt_tls,
        ca_file=settings.mqtt_ca_file,
    )


PublishHandler = Callable[[str, bytes, int, bool], None]


class SessionMarkers:
    """Which MQTT sessions ingest created and did not forget on purpose: one file per client id
    in ``folder`` (none: in memory only)."""

    def __init__(self, folder: str) -> None:
        self._folder = Path(folder) if folder else None
        self._memory: set[str] = set()

    def _path(self, client: str) -> Path | None:
        return self._folder / client if self._folder is not None else None

    def exists(self, client: str) -> bool:
        path = self._path(client)
        return client in self._memory or (path is not None and path.exists())

    def mark(self, client: str) -> None:
        """Remember ``client``'s session, in memory and (if it can) on disk. A marker that cannot
        be written is a setup fault of this alarm only: logged, never raised (this runs in the
        MQTT client's connect callback, and ingest must go on)."""
        self._memory.add(client)
        path = self._path(client)
        if path is None or path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(datetime.now(UTC).isoformat(timespec="seconds") + "\n")
        except OSError as exc:
            log.error(
                "ingest session marker not written: a session the broker loses while this "
                "process restarts will not be noticed; give F2_INGEST_STATE_DIR a writable volume",
                extra={"stage": "ingest", "failure": BLOCKED.value, "detail": f"{path}: {exc}"},
            )

    def forget(self, client: str) -> None:
        self._memory.discard(client)
        path = self._path(client)
        if path is not None:
            path.unlink(missing_ok=True)


class PayloadBudget:
    """The payload bytes one ingest process holds, against ``max_bytes``.

    Each partition counts what its network thread received and what its worker released (when
    the epoch holding the messages completed); each counter is written by one thread only, so no
    lock is needed. The sessions stop reading while :meth:`exceeded`.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.parts: list[_MqttPartition] = []

    def held(self) -> int:
        return sum(part.received_bytes - part.released_bytes for part in self.parts)

    def exceeded(self) -> bool:
        return self.held() > self.max_bytes


class LeanClient(mqtt.Client):
    """paho's client with a lean path for the QoS 1 PUBLISH packets a manual-ack source gets.

    Stock paho reads each packet with three or more ``recv`` calls (command byte, each byte of
    the remaining length, the body) after a ``select``, decodes every PUBLISH into an
    ``MQTTMessage`` with a freshly built ``Properties`` object, formats a debug log line, takes
    the callback lock and matches the topic against per-filter callbacks: most of a message's
    cost. Here the socket is read in chunks of up to :data:`READ_CHUNK` bytes
    (:meth:`_sock_recv`), every complete QoS 1 PUBLISH without properties (what brokers send
    unless the publisher set some) in the chunk is decoded straight into
    ``on_publish_received(topic, payload, mid, retain)`` (:meth:`_packet_read`), and
    :meth:`loop_read` goes on until the chunk is used up, so one ``select`` and one ``recv``
    serve many messages; after a read that did not fill a chunk it first waits ``read_wait_s``
    for more to arrive (each wake-up of a session's thread costs GIL hand-offs with the flow's
    thread; docs/ARCHITECTURE.md D3). Every other packet (CONNACK, SUBACK, QoS 0/2, properties,
    a topic that is not UTF-8, a packet cut by the chunk's end) takes paho's own path, which
    reads from the same buffer. It overrides paho's private ``_sock_recv``, ``_packet_read`` and
    ``_handle_publish`` (paho is pinned; ``tests/connectors/test_mqtt_source.py`` checks both
    paths agree on real packets, split anywhere).
    """

    on_publish_received: PublishHandler | None = None
    read_paused: Callable[[], bool] | None = None
    """Checked before each read of a connected session: while it returns True nothing more is
    read from the socket (the broker keeps the messages; TCP flow control holds the rest); what
    one chunk already brought in (≤ :data:`READ_CHUNK` bytes) is still handed over."""
    read_wait_s: float = 0.0
    """After a read that left the socket empty (less than a chunk), how long the next one waits
    for more bytes to gather: fewer, fuller reads for up to this much latency."""
    _chunk: bytes = b""
    _chunk_pos: int = 0
    _chunk_full: bool = False

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        connected = self._state == _ConnectionState.MQTT_CS_CONNECTED
        if self.read_wait_s and connected and not self._chunk_full:
            time.sleep(self.read_wait_s)
        if self._paused():
            time.sleep(PAUSE_POLL_S)
            return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        rc = super().loop_read(max_packets)
        # select() cannot see bytes already in the chunk: use them up before it runs again.
        while rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS and self._chunk_pos < len(self._chunk):
            rc = super().loop_read(1)
        return rc

    def _paused(self) -> bool:
        paused = self.read_paused
        return paused is not None and self._state == _ConnectionState.MQTT_CS_CONNECTED and paused()

    def _sock_recv(self, bufsize: int) -> bytes:
        """Up to ``bufsize`` bytes from the current chunk; an empty chunk is refilled by one
        ``recv`` of up to :data:`READ_CHUNK` bytes (paho's exceptions and EOF unchanged). While
        reading is paused, only the ``bufsize`` bytes paho asks for are read: the rest of a
        packet the chunk's end cut, never another chunk (which could end in a cut packet in
        turn, and so on while the socket has bytes)."""
        chunk, pos = self._chunk, self._chunk_pos
        if pos >= len(chunk):
            chunk = super()._sock_recv(bufsize if self._paused() else max(bufsize, READ_CHUNK))
            self._chunk_full = len(chunk) >= READ_CHUNK
            if len(chunk) <= bufsize:  # EOF, or all of it wanted
                self._chunk, self._chunk_pos = b"", 0
                return chunk
            self._chunk, pos = chunk, 0
        end = min(pos + bufsize, len(chunk))
        self._chunk_pos = end
        return chunk[pos:end]

    def _sock_close(self) -> None:
        self._chunk, self._chunk_pos = b"", 0  # bytes of a closed connection are void
        super()._sock_close()

    def _packet_read(self) -> mqtt.MQTTErrorCode:
        if self._in_packet["command"] == 0 and self._chunk_pos < len(self._chunk):
            handled = self._read_publishes()
            if handled:
                with self._msgtime_mutex:
                    self._last_bytes_received = time.monotonic()
                return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def _read_publishes(self) -> int:
        """Hands over the complete lean PUBLISH packets at the chunk's position; stops at the
        first other or incomplete packet (left to paho). Returns how many it handled."""
        handler = self.on_publish_received
        if handler is None or not self._manual_ack or self._protocol != MQTTProtocolVersion.MQTTv5:
            return 0
        chunk, pos, size, handled = self._chunk, self._chunk_pos, len(self._chunk), 0
        while pos + 2 <= size:
            command = chunk[pos]
            if command & 0xF6 != 0x32:  # not a QoS 1 PUBLISH (DUP and RETAIN may be set)
                break
            length, mult, at = 0, 1, pos + 1
            while at < size and at < pos + 5:
                byte = chunk[at]
                length += (byte & 0x7F) * mult
                mult <<= 7
                at += 1
                if not byte & 0x80:
                    break
            else:
                break  # remaining length cut by the chunk's end (or malformed: paho decides)
            end = at + length
            topic_end = at + 2 + ((chunk[at] << 8) | chunk[at + 1]) if at + 1 < size else size
            if end > size or topic_end + 2 >= end or chunk[topic_end + 2]:
                break  # incomplete, too short, or has properties
            try:
                topic = chunk[at + 2 : topic_end].decode()
            except UnicodeDecodeError:
                break
            mid = (chunk[topic_end] << 8) | chunk[topic_end + 1]
            self._chunk_pos = pos = end  # first: a raising handler must not see its packet again
            handler(topic, chunk[topic_end + 3 : end], mid, bool(command & 1))
            handled += 1
        return handled

    def _handle_publish(self) -> mqtt.MQTTErrorCode:
        handler = self.on_publish_received
        command = self._in_packet["command"]
        packet = self._in_packet["packet"]
        end = 2 + ((packet[0] << 8) | packet[1]) if len(packet) > 1 else 0
        if (
            handler is None
            or command & 0x06 != 0x02
            or len(packet) <= end + 2
            or packet[end + 2]
            or not self._manual_ack
            or self._protocol != MQTTProtocolVersion.MQTTv5
        ):
            return super()._handle_publish()
        try:
            topic = packet[2:end].decode()
        except UnicodeDecodeError:
            return super()._handle_publish()
        payload = bytes(packet[end + 3 :])  # paho reads packets into a bytearray
        handler(topic, payload, (packet[end] << 8) | packet[end + 1], bool(command & 1))
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


def new_client(config: MqttSourceSettings, client_id: str, manual_ack: bool) -> LeanClient:
    """A paho MQTT v5 client with credentials and TLS from ``config`` (not connected)."""
    client = LeanClient(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    if config.username:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        client.tls_set(ca_certs=config.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
    client.reconnect_delay_set(*RECONNECT_DELAY_S)
    client.read_wait_s = config.read_wait_ms / 1000
    return client


def client_id(config: MqttSourceSettings, partition: str) -> str:
    """The stable MQTT client id of one source partition (the broker's session key)."""
    return f"{config.client_prefix}-{partition}"


def forget_sessions(config: MqttSourceSettings, timeout_s: float = 10.0) -> int:
    """Delete the broker-side sessions of every partition (queued messages are discarded).

    For tests, benchmarks and shrinking the partition count after a drain; returns how many
    sessions were reached.
    """
    done = 0
    markers = SessionMarkers(config.state_dir)
    for index in range(config.partitions):
        client = new_client(config, client_id(config, f"s{index}"), manual_ack=False)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        try:
            client.connect(
                config.host, config.port, keepalive=10, clean_start=True, properties=props
            )
        except OSError:
            continue
        client.loop_start()
        deadline = time.monotonic() + timeout_s
        while not client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        if client.is_connected():
            done += 1
            markers.forget(client_id(config, f"s{index}"))
        client.disconnect()
        client.loop_stop()
    return done


def send_pubacks(client: mqtt.Client, mids: list[int]) -> None:
    """PUBACK ``mids`` (in this order) as one write to the broker.

    ``client.ack(mid, 1)`` queues one packet per id and wakes paho's network thread through a
    socket each time: a syscall and a GIL hand-off per message. Here all the PUBACKs go into
    paho's outgoing packet queue (``Client._packet_queue``, paho 2.x) as one packet; where that
    method is missing (another paho version), it falls back to ``client.ack`` per id.
    """
    queue = getattr(client, "_packet_queue", None)
    if queue is None:
        for mid in mids:
            client.ack(mid, 1)
        return
    packet = struct.pack(f">{len(mids)}I", *[_PUBACK | mid for mid in mids])
    queue(mqtt.PUBACK, packet, 0, 0)


def _count(runs: list[tuple[int, list[int]]]) -> int:
    return sum(len(mids) for _, mids in runs)


class _MqttPartition(StatefulSourcePartition[RawMessage, None]):
    """One MQTT session. Acks in receive order, only for the current connection's messages."""

    def __init__(
        self, config: MqttSourceSettings, partition: str, budget: PayloadBudget | None = None
    ) -> None:
        self._config = config
        self._partition = partition
        # Payload bytes: received (network thread), released (worker), of the open epoch and of
        # the closed epochs not yet released (worker).
        self.received_bytes = 0
        self.released_bytes = 0
        self._epoch_bytes = 0
        self._closed_bytes = 0
        self._budget = budget or PayloadBudget(config.max_buffer_bytes)
        self._budget.parts.append(self)
        self._batch_bytes = max(config.max_buffer_bytes // BATCH_SHARE, 1)
        self._batch_wait_s = config.batch_wait_ms / 1000
        self._idle = timedelta(milliseconds=config.batch_wait_ms) if config.batch_wait_ms else _IDLE
        self._last_batch = 0.0
        self._check_every = max(config.max_buffer_bytes // CHECK_SHARE, 1)
        self._next_check = 0
        self._paused = False
        self._client_id = client_id(config, partition)
        # (connection generation, packet id, message), appended by the paho network thread.
        self._inbox: deque[tuple[int, int, RawMessage]] = deque()
        self._generation = 0
        # Packet ids to acknowledge, in receive order, as (connection generation, ids) runs:
        # of the open epoch, and of the closed epochs (acked on the next ``next_batch``).
        self._emitted: list[tuple[int, list[int]]] = []
        self._to_ack: list[tuple[int, list[int]]] = []
        self._received = RECEIVED.labels(partition)
        self._acked = ACKED.labels(partition)
        self._skipped = ACKS_SKIPPED.labels(partition)
        self._unacked = UNACKED.labels(partition)
        self._connected = CONNECTED.labels(partition)
        self._markers = SessionMarkers(config.state_dir)
        self._lost = SESSIONS_LOST.labels(partition)
        self._lost_time = SESSION_LOST_TIME.labels(partition)
        self._read_paused = READ_PAUSED.labels(partition)
        self._read_pauses = READ_PAUSES.labels(partition)
        self._client = self._connect()

    def _connect(self) -> mqtt.Client:
        client = new_client(self._config, self._client_id, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish_received = self._on_publish
        client.read_paused = self._over_budget
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._config.session_expiry_s
        props.ReceiveMaximum = self._config.receive_maximum
        client.connect_async(
            self._config.host,
            self._config.port,
            keepalive=self._config.keepalive_s,
            clean_start=False,
            properties=props,
        )
        client.loop_start()
        return client

    def _on_connect(self, client: mqtt.Client, _u: object, flags, reason_code, _p) -> None:
        if reason_code.is_failure:
            CONNECTS.labels(self._partition, "refused").inc()
            log.warning(
                "mqtt connect refused",
                extra={"stage": "ingest", "partition": self._partition, "reason": str(reason_code)},
            )
            return
        self._generation += 1
        CONNECTS.labels(self._partition, "ok").inc()
        self._connected.set(1)
        present = bool(flags.session_present)
        if not present and self._markers.exists(self._client_id):
            self._lost.inc()
            self._lost_time.set(time.time())
            log.error(
                "mqtt session lost: the broker answered with a new, empty session, so the "
                "messages queued in it are gone (another client took its client id with clean "
                "start, it expired, or the broker lost its state)",
                extra={
                    "stage": "ingest",
                    "partition": self._partition,
                    "client_id": self._client_id,
                    "reason": "session_lost",
                },
            )
        self._markers.mark(self._client_id)
        options = SubscribeOptions(qos=1)
        group = self._config.share_group
        client.subscribe([(f"$share/{group}/{f}", options) for f in self._config.topic_filters])
        log.info(
            "mqtt session connected",
            extra={
                "stage": "ingest",
                "partition": self._partition,
                "client_id": self._client_id,
                "session_present": bool(flags.session_present),
            },
        )

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f, reason_code, _p) -> None:
        self._connected.set(0)
        CONNECTS.labels(self._partition, "lost").inc()
        log.warning(
            "mqtt session disconnected; reconnecting",
            extra={"stage": "ingest", "partition": self._partition, "reason": str(reason_code)},
        )

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _mid: int, reason_codes, _p) -> None:
        failed = [str(code) for code in reason_codes if code.is_failure]
        if failed:
            log.error(
                "mqtt subscribe refused (check the broker ACL)",
                extra={"stage": "ingest", "partition": self._partition, "reason": failed[0]},
            )
            return
        log.info(
            "mqtt session subscribed",
            extra={"stage": "ingest", "partition": self._partition, "client_id": self._client_id},
        )

    def _over_budget(self) -> bool:
        """Whether the process holds too many payload bytes to read more (network thread).

        The process-wide sum is taken only after this session received another
        ``1/CHECK_SHARE`` of the budget (or while it is paused), not before every packet: that
        check cost about a microsecond, a few percent of a message's cost in this process.
        """
        if not self._paused and self.received_bytes < self._next_check:
            return False
        self._next_check = self.received_bytes + self._check_every
        over = self._budget.exceeded()
        if over != self._paused:
            self._paused = over
            self._read_paused.set(1 if over else 0)
            if over:
                self._read_pauses.inc()
        return over

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        raw = RawMessage(
            msg.topic, msg.payload, time.time_ns() // 1_000_000, msg.qos, bool(msg.retain)
        )
        self.received_bytes += len(raw.payload)
        self._inbox.append((self._generation, msg.mid, raw))

    def _on_publish(self, topic: str, payload: bytes, mid: int, retain: bool) -> None:
        """A QoS 1 message from :class:`LeanClient`'s lean path (paho's network thread)."""
        raw = RawMessage(topic, payload, time.time_ns() // 1_000_000, 1, retain)
        self.received_bytes += len(payload)
        self._inbox.append((self._generation, mid, raw))

    def next_batch(self) -> list[RawMessage]:
        if self._to_ack:
            self._ack_closed_epochs()
        if self._closed_bytes:
            self.released_bytes += self._closed_bytes
            self._closed_bytes = 0
        inbox = self._inbox
        count = min(len(inbox), self._config.batch_size)
        if not count:
            return []
        popleft = inbox.popleft
        emitted = self._emitted
        mids = emitted[-1][1] if emitted and emitted[-1][0] == self._generation else None
        batch = []
        size = 0
        max_size = self._batch_bytes
        for _ in range(count):
            if size >= max_size:  # a batch of big payloads stops early (bounded copies)
                break
            generation, mid, raw = popleft()
            if raw.qos:
                if mids is None or generation != emitted[-1][0]:
                    mids = []
                    emitted.append((generation, mids))
                mids.append(mid)
            size += len(raw.payload)
            batch.append(raw)
        self._epoch_bytes += size
        self._last_batch = time.monotonic()
        count = len(batch)
        self._received.inc(count)
        self._unacked.set(_count(emitted) + _count(self._to_ack))
        return batch

    def _ack_closed_epochs(self) -> None:
        current = self._generation
        sent = skipped = 0
        for generation, mids in self._to_ack:
            if generation == current:
                send_pubacks(self._client, mids)
                sent += len(mids)
            else:
                skipped += len(mids)
        self._acked.inc(sent)
        if skipped:
            self._skipped.inc(skipped)
        self._to_ack = []
        self._unacked.set(_count(self._emitted))

    def next_awake(self) -> datetime | None:
        """Now when a full batch waits; else at the end of the batch window that began with the
        last batch (fewer, larger batches through the flow); when idle, polls at that pace."""
        if len(self._inbox) >= self._config.batch_size:
            return None
        wait = self._last_batch + self._batch_wait_s - time.monotonic()
        if wait <= 0:
            return None if self._inbox else datetime.now(UTC) + self._idle
        return datetime.now(UTC) + timedelta(seconds=wait)

    def snapshot(self) -> None:
        self._to_ack.extend(self._emitted)
        self._emitted = []
        self._closed_bytes += self._epoch_bytes
        self._epoch_bytes = 0

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class MqttSource(FixedPartitionedSource[RawMessage, None]):
    """``config.partitions`` MQTT sessions ``s0``…``s<K-1>``, spread over the flow's workers."""

    def __init__(self, config: MqttSourceSettings) -> None:
        self._config = config
        self._budget = PayloadBudget(config.max_buffer_bytes)  # one per process
        BUFFER_BYTES.set_function(self._budget.held)  # read at each scrape

    def list_parts(self) -> list[str]:
        return [f"s{i}" for i in range(self._config.partitions)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _MqttPartition:
        return _MqttPartition(self._config, for_part, self._budget)
