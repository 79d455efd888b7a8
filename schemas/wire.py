"""The pipeline's Kafka records, one definition each (docs/PROTOCOL.md, section 5).

- :class:`KafkaRecord`: what a sink produces (topic, key, value, headers, partition).
- The raw record (``raw_iot_data``): the MQTT payload unchanged, keyed by the controller's MAC,
  with the headers ``mqtt_topic``, ``mqtt_qos``, ``mqtt_retain`` and ``received_at`` (epoch ms).
  Written by ingest (:func:`raw_record`); read back into a :class:`~schemas.records.RawMessage`
  by the decode flow, ``f2 replay`` and ``f2 dlq redrive`` (:func:`raw_message`).
- The dead letter (``dlq_iot_data``): the original payload with the raw headers, ``reason``,
  ``detail``, ``stage``, ``source_topic`` / ``source_partition`` / ``source_offset`` (its place in
  the raw archive; ``""``, ``-1``, ``-1`` at the ingest stage) and, for a data-point or row error,
  ``label``. Every stage builds it with :func:`dead_letter` (``f2 dlq redrive`` adds
  ``redriven_at``). A record Kafka refuses for its size becomes :func:`undeliverable`; a dead
  letter refused for its size is :func:`truncated`.
- The decoded records (``decoded_iot_data``): one JSON object per reading or event
  (:func:`decoded_json`), with ``kind``, the names, the value, ``time`` (RFC 3339, UTC, ``Z``),
  the registry ids and version, and the schema version ``v``. ``f2 decode`` prints the same
  records, and its errors as ``{"kind": "error", ...}`` (:func:`result_json`).

Pure: no I/O, no Kafka client.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import msgspec

from schemas.reasons import UNDELIVERABLE
from schemas.records import DECODED_SCHEMA_VERSION, Decoded, DecodeError, Event, RawMessage, Reading
from schemas.topics import mac_from_topic

Headers = list[tuple[str, bytes]]

MQTT_TOPIC = "mqtt_topic"
MQTT_QOS = "mqtt_qos"
MQTT_RETAIN = "mqtt_retain"
RECEIVED_AT = "received_at"
REASON = "reason"
DETAIL = "detail"
STAGE = "stage"
LABEL = "label"
SOURCE_TOPIC = "source_topic"
SOURCE_PARTITION = "source_partition"
SOURCE_OFFSET = "source_offset"
TARGET_TOPIC = "target_topic"
ORIGINAL_SIZE = "original_size"
SHA256 = "sha256"
REDRIVEN_AT = "redriven_at"

DEAD_LETTER_VALUE_BYTES = 65536
"""A dead letter the dead-letter topic refuses for its size keeps at most this much of its value,
halved again on each further refusal, down to :data:`DEAD_LETTER_MIN_BYTES`."""
DEAD_LETTER_MIN_BYTES = 1024


class KafkaRecord(msgspec.Struct, frozen=True, gc=False):
    """One record to produce. ``partition`` None = by key (librdkafka's default partitioner)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers = []
    partition: int | None = None


# --- raw records -----------------------------------------------------------------------------

QOS_HEADERS = {qos: (MQTT_QOS, str(qos).encode()) for qos in (0, 1, 2)}
RETAIN_HEADERS = {False: (MQTT_RETAIN, b"0"), True: (MQTT_RETAIN, b"1")}
_QOS = {b"0": 0, b"1": 1, b"2": 2}
_TRUE = (b"1", b"true", b"True")


def topic_header(topic: str) -> tuple[str, bytes]:
    """The ``mqtt_topic`` header of ``topic`` (ingest caches it per topic)."""
    return (MQTT_TOPIC, topic.encode())


def raw_record(
    raw: RawMessage, topic: str, key: bytes, mqtt_topic: tuple[str, bytes] | None = None
) -> KafkaRecord:
    """The raw record of ``raw`` for ``topic``, keyed ``key`` (the MAC); ``mqtt_topic`` is the
    precomputed :func:`topic_header` of ``raw.topic``, if the caller has it."""
    headers = [
        mqtt_topic or topic_header(raw.topic),
        QOS_HEADERS.get(raw.qos) or (MQTT_QOS, str(raw.qos).encode()),
        RETAIN_HEADERS[raw.retain],
        (RECEIVED_AT, b"%d" % raw.received_at_ms),
    ]
    return KafkaRecord(topic, key, raw.payload, headers)


def _topic_text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _int(value: bytes | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def raw_message(
    headers: Mapping[str, bytes | None] | Sequence[tuple[str, bytes | None]] | None,
    value: bytes | None,
    timestamp_ms: int,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    topic_text: Callable[[bytes], str] = _topic_text,
) -> RawMessage:
    """The :class:`RawMessage` of a raw record (or of a dead letter, which carries the same
    headers): ``received_at`` falls back to the record's Kafka timestamp ``timestamp_ms``; a
    missing QoS reads as 1. ``topic_text`` decodes the ``mqtt_topic`` header (callers on the hot
    path pass a cached decoder).

    ``headers`` by name, or as the list of pairs a Kafka client returns (the last of repeated
    names counts, as in a ``dict``; None: no headers). A list in :func:`raw_record`'s order, what
    ingest writes, is read in place without building a dict: the decode flow's source does this
    for every record.
    """
    if type(headers) is list and len(headers) == 4:
        (n_topic, topic), (n_qos, qos_text), (n_retain, retain), (n_received, received_at) = headers
        if not (
            n_topic == MQTT_TOPIC
            and n_qos == MQTT_QOS
            and n_retain == MQTT_RETAIN
            and n_received == RECEIVED_AT
        ):
            topic, qos_text, retain, received_at = _raw_headers(dict(headers))
    elif type(headers) is dict or isinstance(headers, Mapping):
        topic, qos_text, retain, received_at = _raw_headers(headers)
    else:
        topic, qos_text, retain, received_at = _raw_headers(dict(headers or ()))
    received = _int(received_at, timestamp_ms)
    qos = _QOS.get(qos_text) if qos_text is not None else 1  # type: ignore[arg-type]
    return RawMessage(
        topic_text(topic or b""),
        value or b"",
        received if received > 0 else 0,
        _int(qos_text, 1) if qos is None else qos,
        retain in _TRUE,
        source_topic,
        source_partition,
        source_offset,
    )


def _raw_headers(headers: Mapping[str, bytes | None]) -> tuple[bytes | None, ...]:
    """The values of the four raw headers, in :func:`raw_record`'s order (None where missing)."""
    return (
        headers.get(MQTT_TOPIC),
        headers.get(MQTT_QOS),
        headers.get(MQTT_RETAIN),
        headers.get(RECEIVED_AT),
    )


# --- dead letters ----------------------------------------------------------------------------


def dead_letter(
    raw: RawMessage, reason: str, detail: str, stage: str, topic: str, label: str | None = None
) -> KafkaRecord:
    """The dead letter of ``raw`` (every stage: ingest, decode, store, redrive): its payload, its
    raw headers, why, where, and its place in the raw archive; keyed by the MAC when the topic
    has one."""
    headers = [
        topic_header(raw.topic),
        QOS_HEADERS.get(raw.qos) or (MQTT_QOS, str(raw.qos).encode()),
        RETAIN_HEADERS[raw.retain],
        (RECEIVED_AT, b"%d" % raw.received_at_ms),
        (REASON, reason.encode()),
        (DETAIL, detail.encode("utf-8", "replace")),
        (STAGE, stage.encode()),
        (SOURCE_TOPIC, raw.source_topic.encode()),
        (SOURCE_PARTITION, b"%d" % raw.source_partition),
        (SOURCE_OFFSET, b"%d" % raw.source_offset),
    ]
    if label is not None:
        headers.append((LABEL, label.encode("utf-8", "replace")))
    mac = mac_from_topic(raw.topic)
    return KafkaRecord(topic, mac.encode() if mac else None, raw.payload, headers)


def _replaced(headers: Headers, new: Headers) -> Headers:
    names = {name for name, _ in new}
    return [h for h in headers if h[0] not in names] + new


def undeliverable(record: KafkaRecord, detail: str, stage: str, topic: str) -> KafkaRecord:
    """The dead letter of ``record``, which Kafka refused for its size: its value and headers,
    with ``reason`` = ``undeliverable``, ``detail``, ``stage`` and ``target_topic``."""
    headers = _replaced(
        list(record.headers),
        [
            (REASON, UNDELIVERABLE.encode()),
            (DETAIL, detail.encode()),
            (STAGE, stage.encode()),
            (TARGET_TOPIC, record.topic.encode()),
        ],
    )
    return KafkaRecord(topic, record.key, record.value, headers)


def truncated(record: KafkaRecord) -> KafkaRecord | None:
    """A dead letter the dead-letter topic refused for its size, shorter: the first
    :data:`DEAD_LETTER_VALUE_BYTES` of its value (half of it, if that is no shorter) with
    ``original_size`` and ``sha256`` of the whole value; halved again on each further refusal;
    None below :data:`DEAD_LETTER_MIN_BYTES` (the topic cannot hold even that: a setup fault)."""
    if dict(record.headers).get(ORIGINAL_SIZE) is None:
        size = min(DEAD_LETTER_VALUE_BYTES, len(record.value) // 2 or 1)
        if len(record.value) > DEAD_LETTER_VALUE_BYTES:
            size = DEAD_LETTER_VALUE_BYTES
        digest = hashlib.sha256(record.value).hexdigest().encode()
        extra = [(ORIGINAL_SIZE, str(len(record.value)).encode()), (SHA256, digest)]
        headers = _replaced(list(record.headers), extra)
    else:
        size = len(record.value) // 2
        headers = list(record.headers)
    if size < DEAD_LETTER_MIN_BYTES:
        return None
    return KafkaRecord(record.topic, record.key, record.value[:size], headers, record.partition)


# --- decoded records -------------------------------------------------------------------------


class EventRecord(msgspec.Struct, tag="event", tag_field="kind"):
    """An event on ``decoded_iot_data``; ``sensor_id``/``datapoint_id`` are null for events, so
    readings and events share one set of keys."""

    mac: str
    connector: str
    component: str
    field: str
    value: bool | float | str
    time: datetime
    sensor_id: None
    datapoint_id: None
    registry_version: int
    v: int = DECODED_SCHEMA_VERSION


_encode = msgspec.json.Encoder().encode


def event_record(event: Event) -> EventRecord:
    """The decoded record of ``event``."""
    return EventRecord(
        event.mac,
        event.connector,
        event.component,
        event.field,
        event.value,
        event.time,
        None,
        None,
        event.registry_version,
    )


def decoded_json(item: Reading | Event) -> bytes:
    """The ``decoded_iot_data`` value of a reading (the :class:`Reading` itself) or an event."""
    return _encode(item if type(item) is Reading else event_record(item))  # type: ignore[arg-type]


class ErrorRecord(msgspec.Struct, tag="error", tag_field="kind", omit_defaults=True):
    """An error as ``f2 decode`` prints it (the dead letter carries the same in its headers)."""

    reason: str
    detail: str
    label: str | None = None


def result_json(item: Decoded) -> bytes:
    """One line of ``f2 decode``: the decoded record of a reading or event, or the error."""
    if type(item) is DecodeError:
        return _encode(ErrorRecord(item.reason, item.detail, item.label))
    return decoded_json(item)  # type: ignore[arg-type]
