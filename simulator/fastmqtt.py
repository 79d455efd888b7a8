"""A minimal MQTT v5 publisher over a raw TCP socket, for the simulator's load mode.

Delivery: like :class:`simulator.publisher.Publisher` (the paho-based client of the device-like
mode), messages go out at QoS 0 or 1, never retained, and a message is counted in the
:class:`~simulator.report.Tally` only when the broker acknowledged it with a success reason code:
a QoS 1 PUBACK below 0x80 (0x00 success, 0x10 no matching subscribers); a PUBACK of 0x80 or more
(e.g. 0x87 not authorized) counts the message as refused. A QoS 0 message counts once it was
written to the socket. Up to the broker's Receive Maximum (CONNACK; 65535 if absent) QoS 1
messages are in flight at once; :meth:`FastPublisher.publish` blocks beyond that, so memory stays
bounded. Messages unacknowledged when the run ends are not counted. A lost connection is
re-established (clean start) and the unacknowledged messages are sent again with the DUP flag,
so the broker may deliver a message twice (the pipeline deduplicates by identity).

What makes it fast where paho is not: each packet is built with one ``join`` and appended to one
buffer, written with one ``sendall`` per :meth:`FastPublisher.service` call (the simulator calls it
every few hundred messages); acknowledgements are read in bulk and parsed in one pass. In flight
a message is only its packet (kept for a re-send) and its kind
(:func:`simulator.messages.kind_index`), in two lists indexed by packet identifier; an
acknowledgement adds one to its kind's count, from which :attr:`FastPublisher.tally` is built.
:meth:`FastPublisher.send` takes a ready topic field, payload and kind (load mode's hot path);
:meth:`FastPublisher.publish` takes an :class:`~simulator.messages.Outgoing`. It also subscribes to
the controllers' ``cmnd/`` topics and collects the commands, so load mode still answers them.

The first half of the module is the pure packet codec (no I/O), the second the client.
"""

from __future__ import annotations

import logging
import select
import socket
import struct
import time

from schemas.settings import Settings
from simulator.messages import KINDS, Outgoing, kind_index, topic_field
from simulator.publisher import SUBSCRIBE_BATCH, Command
from simulator.report import Tally

log = logging.getLogger("f2.simulator")

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

PROTOCOL_LEVEL = 5
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
MAXIMUM_QOS = 0x24
MAXIMUM_PACKET_SIZE = 0x27
SERVER_KEEP_ALIVE = 0x13
REASON_STRING = 0x1F
DEFAULT_RECEIVE_MAXIMUM = 65535
MAX_VARINT = 268_435_455
FAILURE = 0x80

FLUSH_BYTES = 1 << 16
RECV_BYTES = 1 << 18
IO_TIMEOUT_S = 10.0
TOPIC_CACHE_MAX = 10_000
SUBSCRIBE_IDS = 1024  # the highest packet identifiers are for SUBSCRIBE, the rest for PUBLISH
PUBLISH_IDS = 65535 - SUBSCRIBE_IDS
FIRST_IDS = 1024  # packet identifiers a publisher cycles through at first; doubled when all busy
RETRY_S = 1.0

# Property identifier → value type (MQTT v5 §2.2.2.2).
_BYTE, _U16, _U32, _VARINT, _STR, _BIN, _PAIR = range(7)
PROPERTY_TYPES = {
    0x01: _BYTE, 0x02: _U32, 0x03: _STR, 0x08: _STR, 0x09: _BIN, 0x0B: _VARINT, 0x11: _U32,
    0x12: _STR, 0x13: _U16, 0x15: _STR, 0x16: _BIN, 0x17: _BYTE, 0x18: _U32, 0x19: _BYTE,
    0x1A: _STR, 0x1C: _STR, 0x1F: _STR, 0x21: _U16, 0x22: _U16, 0x23: _U16, 0x24: _BYTE,
    0x25: _BYTE, 0x26: _PAIR, 0x27: _U32, 0x28: _BYTE, 0x29: _BYTE, 0x2A: _BYTE,
}  # fmt: skip
_U16_AT = struct.Struct(">H").unpack_from
_U32_AT = struct.Struct(">I").unpack_from


_VARINTS: list[bytes] = []  # encode_varint(n) for every n below 2**14, filled below
# Packet identifier (2 bytes) and an empty property list, by identifier: the part of a QoS 1
# PUBLISH between topic and payload.
_ID_FIELDS: list[bytes] = [n.to_bytes(2, "big") + b"\x00" for n in range(65536)]


class ProtocolError(ValueError):
    """The broker sent bytes that are not valid MQTT v5 (broken infrastructure, not bad input)."""


def encode_varint(value: int) -> bytes:
    """``value`` as an MQTT Variable Byte Integer (1–4 bytes, 7 bits each, low bits first)."""
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"{value} does not fit a variable byte integer")
    if value < 128:
        return bytes((value,))
    out = bytearray()
    while True:
        value, digit = value >> 7, value & 0x7F
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


_VARINTS.extend(encode_varint(n) for n in range(1 << 14))


def decode_varint(data: bytes | bytearray, offset: int = 0) -> tuple[int, int] | None:
    """The Variable Byte Integer at ``offset`` and the offset after it; ``None`` if ``data`` ends
    first. ``ProtocolError`` if it runs over 4 bytes."""
    value = shift = 0
    for index in range(offset, min(offset + 4, len(data))):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if byte < 128:
            return value, index + 1
        shift += 7
    if len(data) - offset >= 4:
        raise ProtocolError("variable byte integer longer than 4 bytes")
    return None


def max_remaining_length(maximum_packet_size: int) -> int:
    """The largest remaining length of a packet whose whole size fits ``maximum_packet_size``."""
    length = min(maximum_packet_size - 2, MAX_VARINT)
    while length > 0 and 1 + len(encode_varint(length)) + length > maximum_packet_size:
        length -= 1
    return length


def packet_topic(packet: bytes) -> str:
    """The topic of an encoded PUBLISH packet."""
    decoded = decode_varint(packet, 1)
    if decoded is None:
        raise ProtocolError("truncated PUBLISH")
    offset = decoded[1]
    (size,) = _U16_AT(packet, offset)
    return packet[offset + 2 : offset + 2 + size].decode()


def _string(text: str | bytes) -> bytes:
    """A UTF-8 string or binary data with its 2-byte length prefix."""
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(">H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    """Fixed header (type and flags, remaining length) followed by ``body``."""
    return bytes((first,)) + encode_varint(len(body)) + body


def encode_connect(client_id: str, username: str, password: str, keepalive: int) -> bytes:
    """CONNECT with clean start, username and password, no will, no properties."""
    flags = 0x02 | (0x80 if username else 0) | (0x40 if password else 0)
    header = _string("MQTT") + bytes((PROTOCOL_LEVEL, flags)) + struct.pack(">H", keepalive)
    payload = _string(client_id)
    payload += _string(username) if username else b""
    payload += _string(password) if password else b""
    return _packet(CONNECT, header + b"\x00" + payload)


def encode_publish(
    topic: bytes, payload: bytes, qos: int, packet_id: int = 0, dup: bool = False
) -> bytes:
    """PUBLISH (never retained, no properties); ``packet_id`` only at QoS 1."""
    first = PUBLISH | (qos << 1) | (0x08 if dup else 0)
    length = 3 + len(topic) + len(payload) + (2 if qos else 0)
    pid = struct.pack(">H", packet_id) if qos else b""
    return b"".join(
        (
            bytes((first,)),
            encode_varint(length),
            struct.pack(">H", len(topic)),
            topic,
            pid,
            b"\x00",
            payload,
        )
    )


def encode_subscribe(packet_id: int, filters: list[str], qos: int) -> bytes:
    """SUBSCRIBE to ``filters`` with maximum QoS ``qos`` (no properties)."""
    body = struct.pack(">H", packet_id) + b"\x00"
    body += b"".join(_string(f) + bytes((qos,)) for f in filters)
    return _packet(SUBSCRIBE, body)


def encode_puback(packet_id: int) -> bytes:
    """PUBACK with reason 0x00 (the short form: reason and properties omitted)."""
    return bytes((PUBACK, 2)) + struct.pack(">H", packet_id)


def encode_disconnect() -> bytes:
    """DISCONNECT, normal disconnection (reason 0x00 omitted)."""
    return bytes((DISCONNECT, 0))


def split_packets(data: bytes | bytearray, start: int = 0) -> tuple[list[tuple[int, bytes]], int]:
    """The complete packets of ``data`` from ``start`` on as (first byte, body) and the offset
    after the last of them; an incomplete packet at the end is left for the next read."""
    packets: list[tuple[int, bytes]] = []
    offset, size = start, len(data)
    while offset + 2 <= size:
        if data[offset + 1] < 128:
            length, start = data[offset + 1], offset + 2
        else:
            decoded = decode_varint(data, offset + 1)
            if decoded is None:
                break
            length, start = decoded
        end = start + length
        if end > size:
            break
        packets.append((data[offset], bytes(data[start:end])))
        offset = end
    return packets, offset


def decode_properties(data: bytes, offset: int) -> tuple[dict[int, int | str | bytes], int]:
    """The property list at ``offset`` (its length first) as identifier → value (a User Property
    keeps its last pair as ``"key=value"``) and the offset after it."""
    decoded = decode_varint(data, offset)
    if decoded is None:
        raise ProtocolError("truncated property length")
    length, offset = decoded
    end = offset + length
    if end > len(data):
        raise ProtocolError("properties run past the packet")
    props: dict[int, int | str | bytes] = {}
    while offset < end:
        ident = data[offset]
        kind = PROPERTY_TYPES.get(ident)
        offset += 1
        if kind is None:
            raise ProtocolError(f"unknown property 0x{ident:02x}")
        value, offset = _property_value(data, offset, kind)
        props[ident] = value
    if offset != end:
        raise ProtocolError("property runs past the property list")
    return props, end


def _property_value(data: bytes, offset: int, kind: int) -> tuple[int | str | bytes, int]:
    """One property value of type ``kind`` at ``offset`` and the offset after it."""
    try:
        if kind == _BYTE:
            return data[offset], offset + 1
        if kind == _U16:
            return _U16_AT(data, offset)[0], offset + 2
        if kind == _U32:
            return _U32_AT(data, offset)[0], offset + 4
        if kind == _VARINT:
            decoded = decode_varint(data, offset)
            if decoded is None:
                raise ProtocolError("truncated property")
            return decoded
        if kind == _PAIR:
            key, offset = _property_value(data, offset, _STR)
            value, offset = _property_value(data, offset, _STR)
            return f"{key}={value}", offset
        (size,) = _U16_AT(data, offset)
        raw = data[offset + 2 : offset + 2 + size]
        if len(raw) != size:
            raise ProtocolError("truncated property")
        return (raw.decode() if kind == _STR else raw), offset + 2 + size
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed property: {exc}") from exc


class Connack:
    """What a CONNACK says: reason code and the limits the client must respect."""

    def __init__(self, reason: int, props: dict[int, int | str | bytes]) -> None:
        self.reason = reason
        self.reason_string = str(props.get(REASON_STRING, ""))
        self.receive_maximum = int(props.get(RECEIVE_MAXIMUM, DEFAULT_RECEIVE_MAXIMUM))
        self.maximum_packet_size = int(props.get(MAXIMUM_PACKET_SIZE, MAX_VARINT + 5))
        self.topic_alias_maximum = int(props.get(TOPIC_ALIAS_MAXIMUM, 0))
        self.maximum_qos = int(props.get(MAXIMUM_QOS, 2))
        keepalive = props.get(SERVER_KEEP_ALIVE)
        self.server_keepalive = None if keepalive is None else int(keepalive)


def parse_connack(body: bytes) -> Connack:
    """A CONNACK body (flags, reason code, properties)."""
    if len(body) < 3:
        raise ProtocolError("CONNACK too short")
    props, _ = decode_properties(body, 2)
    return Connack(body[1], props)


def parse_ack(body: bytes) -> tuple[int, int]:
    """(packet identifier, reason code) of a PUBACK body; the reason is 0x00 when omitted."""
    if len(body) < 2:
        raise ProtocolError("PUBACK too short")
    return (body[0] << 8) | body[1], body[2] if len(body) > 2 else 0


def parse_suback(body: bytes) -> tuple[int, list[int]]:
    """(packet identifier, one reason code per filter) of a SUBACK body."""
    if len(body) < 3:
        raise ProtocolError("SUBACK too short")
    _, offset = decode_properties(body, 2)
    return (body[0] << 8) | body[1], list(body[offset:])


def parse_publish(first: int, body: bytes) -> tuple[str, bytes, int, int]:
    """(topic, payload, QoS, packet identifier or 0) of an incoming PUBLISH."""
    qos = (first >> 1) & 0x03
    try:
        (size,) = _U16_AT(body, 0)
        topic = body[2 : 2 + size].decode()
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"malformed PUBLISH: {exc}") from exc
    offset, packet_id = 2 + size, 0
    if qos:
        packet_id = (body[offset] << 8) | body[offset + 1]
        offset += 2
    _, offset = decode_properties(body, offset)
    return topic, body[offset:], qos, packet_id


class FastPublisher:
    """A connected MQTT v5 publisher with the interface of :class:`simulator.publisher.Publisher`.

    Single-threaded: the owner calls :meth:`service` regularly; it writes the buffered packets,
    reads the broker's packets, and keeps the connection alive. ``window`` caps the QoS 1
    messages in flight below the broker's Receive Maximum (``None``: the broker's limit).
    """

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        qos: int,
        window: int | None = None,
        keepalive: int = 30,
    ) -> None:
        self.qos = qos
        self._refused = Tally()  # refused messages; acknowledged ones are counted by kind
        self._acked: list[int] = []  # acknowledged messages by kind
        self._kinds_counted = 0  # len(self._acked)
        self._settings = settings
        self._client_id = client_id
        self._window_cap = window
        self._window = min(window or DEFAULT_RECEIVE_MAXIMUM, PUBLISH_IDS)
        self._keepalive = keepalive
        self._max_remaining = MAX_VARINT
        self._sock: socket.socket | None = None
        self._out = bytearray()
        self._in = bytearray()
        self._unsent: list[int] = []  # kinds of the QoS 0 messages in ``_out``
        # Unacknowledged QoS 1 packets and their kinds by packet identifier (1.._ids; slot 0 unused)
        self._ids = FIRST_IDS
        self._packets: list[bytes | None] = [None] * (FIRST_IDS + 1)
        self._kinds: list[int] = [0] * (FIRST_IDS + 1)
        self._in_flight = 0
        self._topics: dict[str, bytes] = {}
        self._next_id = 0
        self._next_sub_id = 0
        self._filters: list[str] = []
        self._retry_at = 0.0
        self._commands: list[Command] = []
        self._refusals: dict[int, int] = {}
        self._last_sent = self._last_received = time.monotonic()
        self._ping_sent: float | None = None

    @property
    def tally(self) -> Tally:
        """What the broker accepted (and refused) so far."""
        tally = Tally()
        tally.merge(self._refused)
        tally.add_kinds(self._acked)
        return tally

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect; ``ConnectionError`` if the broker refuses or does not answer in time."""
        settings = self._settings
        sock = socket.create_connection((settings.mqtt_host, settings.mqtt_port), timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._in.clear()
        sock.sendall(
            encode_connect(
                self._client_id, settings.sim_username, settings.sim_password, self._keepalive
            )
        )
        connack = self._read_connack(sock, time.monotonic() + timeout_s)
        user = settings.sim_username
        if connack.reason >= FAILURE:
            sock.close()
            detail = connack.reason_string or "refused"
            raise ConnectionError(f"MQTT connect as {user} failed: 0x{connack.reason:02x} {detail}")
        if connack.maximum_qos < self.qos:
            sock.close()
            raise ConnectionError(f"broker allows QoS {connack.maximum_qos} at most")
        window = min(self._window_cap or connack.receive_maximum, connack.receive_maximum)
        self._window = min(window, PUBLISH_IDS)  # a free packet identifier always exists
        self._max_remaining = max_remaining_length(connack.maximum_packet_size)
        if connack.server_keepalive is not None:
            self._keepalive = connack.server_keepalive
        sock.settimeout(IO_TIMEOUT_S)
        self._sock = sock
        self._last_sent = self._last_received = time.monotonic()
        self._ping_sent = None

    def _read_connack(self, sock: socket.socket, deadline: float) -> Connack:
        """Read until the CONNACK is complete; anything after it stays in ``_in``."""
        while True:
            packets, _ = split_packets(self._in)
            if packets:
                first, body = packets[0]
                if first != CONNACK:
                    sock.close()
                    raise ConnectionError(f"expected CONNACK, got packet 0x{first:02x}")
                del self._in[: 1 + len(encode_varint(len(body))) + len(body)]
                return parse_connack(body)
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(RECV_BYTES)
            except TimeoutError as exc:
                sock.close()
                raise ConnectionError("no CONNACK in time") from exc
            if not chunk:
                sock.close()
                raise ConnectionError("connection closed before CONNACK")
            self._in += chunk

    def subscribe_commands(self, macs: list[str]) -> None:
        """Subscribe to ``cmnd/f2-<mac>/#`` of every controller this connection speaks for."""
        self._filters += [f"cmnd/f2-{mac}/#" for mac in macs]
        self._subscribe(self._filters[len(self._filters) - len(macs) :])
        self.service()

    def _subscribe(self, filters: list[str]) -> None:
        """Queue SUBSCRIBE packets for ``filters`` (maximum QoS 1)."""
        for start in range(0, len(filters), SUBSCRIBE_BATCH):
            self._next_sub_id = (self._next_sub_id + 1) % SUBSCRIBE_IDS
            packet_id = PUBLISH_IDS + 1 + self._next_sub_id
            self._out += encode_subscribe(packet_id, filters[start : start + SUBSCRIBE_BATCH], 1)

    def publish(self, message: Outgoing) -> None:
        """Queue ``message`` for the next write (never retained); see :meth:`send`."""
        topic = self._topics.get(message.topic)
        if topic is None:
            if len(self._topics) >= TOPIC_CACHE_MAX:
                self._topics.clear()
            topic = self._topics[message.topic] = topic_field(message.topic)
        self.send(
            topic, message.payload, kind_index(message.readings, message.events, message.error)
        )

    def send(self, topic: bytes, payload: bytes, kind: int) -> None:
        """Queue a message for the next write (never retained): ``topic`` as an MQTT string field
        (:func:`~simulator.messages.topic_field`), its ``payload`` and its ``kind``; services the
        network while the window of unacknowledged messages is full.

        The hot path: one ``join`` builds the bytes of :func:`encode_publish`.
        """
        length = len(topic) + len(payload) + (3 if self.qos else 1)
        if kind >= self._kinds_counted:
            self._acked.extend([0] * (kind + 1 - len(self._acked)))
            self._kinds_counted = len(self._acked)
        if length > self._max_remaining:
            self._refuse(kind, 0x95, topic[2:].decode())  # packet too large for the broker
            return
        varint = _VARINTS[length] if length < 16384 else encode_varint(length)
        if not self.qos:
            self._unsent.append(kind)
            self._out += b"".join((b"\x30", varint, topic, b"\x00", payload))
        else:
            while self._in_flight >= self._window:
                self.service(0.01)
            if self._in_flight >= self._ids:
                self._more_ids()
            packets, ids = self._packets, self._ids
            packet_id = self._next_id % ids + 1
            while packets[packet_id] is not None:
                packet_id = packet_id % ids + 1
            self._next_id = packet_id
            packet = b"".join((b"\x32", varint, topic, _ID_FIELDS[packet_id], payload))
            packets[packet_id] = packet
            self._kinds[packet_id] = kind
            self._in_flight += 1
            self._out += packet
        if len(self._out) >= FLUSH_BYTES:
            self._flush()

    def _more_ids(self) -> None:
        """Double the packet identifiers in use (every one is in flight; the window allows more).
        They start small so that a connection at device rates stays small."""
        more = min(PUBLISH_IDS, 2 * self._ids) - self._ids
        self._packets.extend([None] * more)
        self._kinds.extend([0] * more)
        self._ids += more

    def service(self, timeout_s: float = 0.0) -> None:
        """Write what is buffered, read and handle what the broker sent (waiting up to
        ``timeout_s`` for it), keep the connection alive; reconnect if it was lost."""
        if self._sock is None:
            if time.monotonic() < self._retry_at:
                time.sleep(timeout_s)
            else:
                self._reconnect()
            return
        try:
            self._keep_alive()
            self._flush()
            self._read(timeout_s)
        except (OSError, ProtocolError) as exc:
            self._lost(str(exc))

    def fileno(self) -> int | None:
        """The connection's socket descriptor (for ``select``), or None while disconnected."""
        return None if self._sock is None else self._sock.fileno()

    def take_commands(self) -> list[Command]:
        """The commands received since the last call."""
        out, self._commands = self._commands, []
        return out

    def pending(self) -> int:
        """Messages published but not yet acknowledged."""
        return self._in_flight

    def drain(self, timeout_s: float = 10.0) -> int:
        """Service the network until every message is acknowledged; the number still pending."""
        deadline = time.monotonic() + timeout_s
        self.service()
        while self._in_flight and time.monotonic() < deadline:
            self.service(0.05)
        return self._in_flight

    def close(self) -> None:
        """Send DISCONNECT and close the socket (call :meth:`drain` first)."""
        for reason, count in sorted(self._refusals.items()):
            extra = {"stage": "simulator", "reason": f"0x{reason:02x}", "count": count}
            log.warning("broker refused messages", extra=extra)
        if self._sock is None:
            return
        try:
            self._flush()
            self._sock.sendall(encode_disconnect())
        except OSError:
            pass
        self._sock.close()
        self._sock = None

    def _flush(self) -> None:
        """Write the buffered packets with one ``sendall``; QoS 0 messages count once written."""
        if not self._out or self._sock is None:
            return
        self._sock.sendall(self._out)
        self._out.clear()
        self._last_sent = time.monotonic()
        acked = self._acked
        for kind in self._unsent:
            acked[kind] += 1
        self._unsent.clear()

    def _read(self, timeout_s: float) -> None:
        """Read everything the broker has sent (waiting up to ``timeout_s`` for the first
        bytes) and handle the complete packets."""
        sock = self._sock
        assert sock is not None
        wait = timeout_s
        while select.select((sock,), (), (), wait)[0]:
            chunk = sock.recv(RECV_BYTES)
            if not chunk:
                raise ConnectionResetError("broker closed the connection")
            self._in += chunk
            wait = 0.0
            if len(chunk) < RECV_BYTES:
                break
        if not self._in:
            return
        self._last_received = time.monotonic()
        used = self._settle_acks(self._in)
        packets, used = split_packets(self._in, used)
        del self._in[:used]
        for first, body in packets:
            self._handle(first, body)

    def _settle_acks(self, data: bytearray) -> int:
        """Settle the PUBACKs at the start of ``data`` (the hot path of :func:`parse_ack` and
        :meth:`_settle`); how many bytes they took. Stops at any other or incomplete packet."""
        packets, kinds, acked, ids = self._packets, self._kinds, self._acked, self._ids
        offset, size, settled = 0, len(data), 0
        while offset + 4 <= size and data[offset] == PUBACK and data[offset + 1] < 128:
            end = offset + 2 + data[offset + 1]
            if end > size or end < offset + 4:
                break
            packet_id = (data[offset + 2] << 8) | data[offset + 3]
            reason = data[offset + 4] if end > offset + 4 else 0
            offset = end
            if packet_id > ids or packets[packet_id] is None:
                continue
            if reason < FAILURE:
                packets[packet_id] = None
                acked[kinds[packet_id]] += 1
                settled += 1
            else:
                self._settle(packet_id, reason)
        self._in_flight -= settled
        return offset

    def _settle(self, packet_id: int, reason: int) -> None:
        """One PUBACK: count its message as acknowledged or refused (unknown identifiers are
        ignored)."""
        packet = self._packets[packet_id] if packet_id <= self._ids else None
        if packet is None:
            return
        self._packets[packet_id] = None
        self._in_flight -= 1
        kind = self._kinds[packet_id]
        if reason < FAILURE:
            self._acked[kind] += 1
        else:
            self._refuse(kind, reason, packet_topic(packet))

    def _handle(self, first: int, body: bytes) -> None:
        """One packet from the broker."""
        kind = first & 0xF0
        if kind == PUBACK:
            self._settle(*parse_ack(body))
        elif kind == PUBLISH:
            topic, payload, qos, packet_id = parse_publish(first, body)
            self._commands.append(Command(topic, payload))
            if qos:
                self._out += encode_puback(packet_id)
        elif kind == PINGRESP:
            self._ping_sent = None
        elif kind == SUBACK:
            _, reasons = parse_suback(body)
            for reason in {r for r in reasons if r >= FAILURE}:
                extra = {"stage": "simulator", "reason": f"0x{reason:02x}"}
                log.warning("broker refused a command subscription", extra=extra)
        elif kind == DISCONNECT:
            reason = body[0] if body else 0
            raise ConnectionResetError(f"broker sent DISCONNECT 0x{reason:02x}")
        else:
            raise ProtocolError(f"unexpected packet 0x{first:02x}")

    def _refuse(self, kind: int, reason: int, topic: str) -> None:
        """Count a message the broker refused (or that exceeds its maximum packet size)."""
        self._refused.refuse_label(KINDS[kind][2] or "good")
        if reason not in self._refusals:
            extra = {"stage": "simulator", "reason": f"0x{reason:02x}", "topic": topic}
            log.warning("broker refused a message", extra=extra)
        self._refusals[reason] = self._refusals.get(reason, 0) + 1

    def _keep_alive(self) -> None:
        """PINGREQ when nothing was sent for half the keepalive; a lost connection if the
        PINGRESP is overdue by a whole keepalive."""
        if not self._keepalive:
            return
        now = time.monotonic()
        if self._ping_sent is not None and now - self._ping_sent > self._keepalive:
            raise TimeoutError("no PINGRESP within the keepalive")
        if self._ping_sent is None and now - self._last_sent >= self._keepalive / 2:
            self._out += bytes((PINGREQ, 0))
            self._ping_sent = now

    def _lost(self, reason: str) -> None:
        """Forget the dead socket; QoS 0 messages not yet written are lost uncounted."""
        log.warning("MQTT connection lost", extra={"stage": "simulator", "reason": reason})
        if self._sock is not None:
            self._sock.close()
        self._sock = None
        self._out.clear()
        self._in.clear()
        self._unsent.clear()

    def _reconnect(self) -> None:
        """Connect again (at most once per :data:`RETRY_S`), subscribe again, and re-send every
        unacknowledged QoS 1 message with the DUP flag."""
        self._retry_at = time.monotonic() + RETRY_S
        try:
            self.connect()
        except (ConnectionError, OSError) as exc:
            log.warning("MQTT reconnect failed", extra={"stage": "simulator", "reason": str(exc)})
            return
        self._subscribe(self._filters)
        for packet in self._packets:
            if packet is not None:
                self._out += bytes((packet[0] | 0x08,)) + packet[1:]  # DUP
