"""The raw socket MQTT v5 publisher: its packet codec, and the client against a scripted broker."""

from __future__ import annotations

import socket
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.settings import Settings
from simulator import fastmqtt as mq
from simulator.fastmqtt import FastPublisher, ProtocolError
from simulator.load import RunConfig, make_publisher
from simulator.messages import Outgoing, kind_index
from simulator.publisher import Publisher

VARINTS = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (16_383, "ff7f"),
    (16_384, "808001"),
    (2_097_151, "ffff7f"),
    (2_097_152, "80808001"),
    (268_435_455, "ffffff7f"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINTS)
def test_varint_matches_the_spec_examples(value, encoded):
    assert mq.encode_varint(value).hex() == encoded
    assert mq.decode_varint(bytes.fromhex(encoded)) == (value, len(encoded) // 2)


@given(st.integers(0, mq.MAX_VARINT), st.binary(max_size=8), st.binary(max_size=3))
def test_varint_round_trips_inside_a_stream(value, before, after):
    data = before + mq.encode_varint(value) + after
    assert mq.decode_varint(data, len(before)) == (value, len(data) - len(after))


def test_varint_limits():
    with pytest.raises(ValueError):
        mq.encode_varint(mq.MAX_VARINT + 1)
    with pytest.raises(ValueError):
        mq.encode_varint(-1)
    assert mq.decode_varint(b"\x80\x80") is None  # more bytes to come
    with pytest.raises(ProtocolError):
        mq.decode_varint(b"\x80\x80\x80\x80\x01")


def test_connect_layout():
    packet = mq.encode_connect("c1", "user", "pw", 30)
    body = (
        b"\x00\x04MQTT\x05"  # protocol name, level 5
        b"\xc2"  # username, password, clean start
        b"\x00\x1e"  # keepalive 30 s
        b"\x00"  # no properties
        b"\x00\x02c1\x00\x04user\x00\x02pw"
    )
    assert packet == b"\x10" + bytes((len(body),)) + body


def test_publish_layout():
    qos1 = mq.encode_publish(b"a/b", b"xyz", 1, 0x1234)
    assert qos1 == b"\x32\x0b\x00\x03a/b\x12\x34\x00xyz"
    assert mq.encode_publish(b"a/b", b"xyz", 0) == b"\x30\x09\x00\x03a/b\x00xyz"
    assert mq.encode_publish(b"a/b", b"xyz", 1, 7, dup=True)[0] == 0x3A
    big = mq.encode_publish(b"t", b"p" * 200, 1, 1)
    assert big[1:3] == mq.encode_varint(206) and len(big) == 3 + 206


def test_packet_topic_reads_the_topic_of_an_encoded_publish():
    assert mq.packet_topic(mq.encode_publish(b"a/b", b"xyz", 1, 0x1234)) == "a/b"
    assert mq.packet_topic(mq.encode_publish(b"t", b"p" * 200, 0)) == "t"


def test_puback_reason_codes():
    assert mq.parse_ack(b"\x00\x05") == (5, 0x00)  # short form: success
    assert mq.parse_ack(b"\x01\x00\x10") == (256, 0x10)  # no matching subscribers
    assert mq.parse_ack(b"\x00\x07\x87\x00") == (7, 0x87)  # not authorized, empty properties
    assert mq.encode_puback(258) == b"\x40\x02\x01\x02"
    with pytest.raises(ProtocolError):
        mq.parse_ack(b"\x00")


def test_split_packets_keeps_a_partial_packet_for_later():
    long_body = bytes(200)
    data = b"\x40\x02\x00\x01" + b"\xd0\x00" + b"\x30" + mq.encode_varint(200) + long_body
    packets, used = mq.split_packets(data + b"\x40\x03\x00")
    assert packets == [(0x40, b"\x00\x01"), (0xD0, b""), (0x30, long_body)]
    assert used == len(data)
    assert mq.split_packets(b"\x30\x80") == ([], 0)


def test_connack_properties_as_mosquitto_sends_them():
    # Mosquitto 2.0 with max_inflight_messages 1000 and max_packet_size 1048576.
    packets, _ = mq.split_packets(bytes.fromhex("200e00000b22000a27001000002103e8"))
    connack = mq.parse_connack(packets[0][1])
    assert connack.reason == 0
    assert connack.receive_maximum == 1000
    assert connack.maximum_packet_size == 1_048_576
    assert connack.topic_alias_maximum == 10
    refused = mq.parse_connack(b"\x00\x86\x05\x1f\x00\x02no")
    assert (refused.reason, refused.reason_string, refused.receive_maximum) == (0x86, "no", 65535)
    with pytest.raises(ProtocolError):
        mq.parse_connack(b"\x00\x00\x02\x7f\x00")  # unknown property


def test_incoming_publish_and_suback():
    body = b"\x00\x03c/d\x00\x09\x03\x23\x00\x01hello"  # QoS 1, id 9, topic alias property
    assert mq.parse_publish(0x32, body) == ("c/d", b"hello", 1, 9)
    assert mq.parse_suback(b"\xff\xfe\x00\x01\x87") == (0xFFFE, [0x01, 0x87])


def local_settings(port: int) -> Settings:
    """Settings that point the simulator's MQTT user at ``127.0.0.1:port``."""
    return Settings(
        mqtt_host="127.0.0.1",
        mqtt_port=port,
        mqtt_username="",
        mqtt_password="",
        sim_username="sim",
        sim_password="secret",
        kafka_bootstrap="",
        params_dsn="",
        timeseries_dsn="",
        redis_url="",
    )


class ScriptedBroker:
    """A one-connection fake broker: CONNACK with a Receive Maximum, then a PUBACK with the next
    scripted reason code for every PUBLISH; records the most QoS 1 messages seen in flight."""

    def __init__(self, reasons: list[int], receive_maximum: int) -> None:
        self.reasons = list(reasons)
        self.receive_maximum = receive_maximum
        self.max_in_flight = 0
        self.disconnected = False
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        conn, _ = self._server.accept()
        buffer, in_flight = b"", []
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            packets, used = mq.split_packets(buffer + chunk)
            buffer = (buffer + chunk)[used:]
            for first, body in packets:
                if first == mq.CONNECT:
                    props = b"\x21" + self.receive_maximum.to_bytes(2, "big")
                    conn.sendall(b"\x20" + bytes((3 + len(props), 0, 0, len(props))) + props)
                elif first & 0xF0 == mq.PUBLISH:
                    topic_len = int.from_bytes(body[:2], "big")
                    in_flight.append(body[2 + topic_len : 4 + topic_len])
                elif first == mq.DISCONNECT:
                    self.disconnected = True
            self.max_in_flight = max(self.max_in_flight, len(in_flight))
            for packet_id in in_flight:
                conn.sendall(b"\x40\x03" + packet_id + bytes((self.reasons.pop(0),)))
            in_flight = []
        conn.close()

    def join(self) -> None:
        self._thread.join(5)
        self._server.close()


def test_only_success_pubacks_count_and_the_window_holds():
    reasons = [0x00, 0x10, 0x87, 0x00, 0x97, 0x00, 0x10, 0x00]
    broker = ScriptedBroker(reasons, receive_maximum=3)
    publisher = FastPublisher(local_settings(broker.port), "unit", qos=1)
    publisher.connect(timeout_s=5)
    for n in range(len(reasons)):
        publisher.publish(Outgoing(f"tele/x/{n}", b"{}", readings=2, error="bad_crc"))
    assert publisher.drain(5) == 0
    publisher.close()
    broker.join()
    tally = publisher.tally
    assert (tally.published, tally.rejected) == (6, 2)
    assert (tally.readings, tally.errors) == (12, {"bad_crc": 6})
    assert broker.max_in_flight <= 3
    assert broker.disconnected


class _Sink:
    """A connected socket that takes every write."""

    def sendall(self, data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def test_many_in_flight_grow_the_identifiers_and_settle_by_kind():
    publisher = FastPublisher(local_settings(1), "unit", qos=1, window=5000)
    publisher._sock = _Sink()  # connected, without a broker: acknowledgements are fed below
    sensor = mq.topic_field("tele/f2-0e0000000001/sensor-mode/J1/sensor-1")
    kinds = [kind_index(readings=3), kind_index(events=2), kind_index(error="bad_crc")]
    for n in range(3000):
        publisher.send(sensor, b'{"n":%d}' % n, kinds[n % 3])
    assert publisher.pending() == 3000 and publisher._ids == 4096
    acks = b"".join(b"\x40\x03" + n.to_bytes(2, "big") + b"\x00" for n in range(1, 2999))
    acks += b"\x40\x03\x0b\xb8\x87"  # 3000 refused: not authorized
    acks += b"\x40\x02\xff\xff"  # an identifier never used: ignored
    assert publisher._settle_acks(bytearray(acks)) == len(acks)
    assert publisher.pending() == 1  # 2999 still in flight
    tally = publisher.tally
    assert (tally.published, tally.readings, tally.events) == (2998, 3 * 1000, 2 * 999)
    assert (tally.errors, tally.rejected, tally.refused) == ({"bad_crc": 999}, 1, {"bad_crc": 1})
    publisher._settle(2999, 0x00)
    publisher._settle(2999, 0x00)  # a duplicate acknowledgement counts once
    assert publisher.pending() == 0 and publisher.tally.published == 2999


def test_refused_connection_raises():
    server = socket.create_server(("127.0.0.1", 0))

    def refuse() -> None:
        conn, _ = server.accept()
        conn.recv(1024)
        conn.sendall(b"\x20\x03\x00\x87\x00")  # not authorized
        conn.close()

    thread = threading.Thread(target=refuse, daemon=True)
    thread.start()
    settings = local_settings(server.getsockname()[1])
    with pytest.raises(ConnectionError, match="0x87"):
        FastPublisher(settings, "unit", qos=1).connect(timeout_s=5)
    thread.join(5)
    server.close()


def test_load_mode_uses_the_raw_client():
    settings = local_settings(1)
    assert isinstance(make_publisher(RunConfig(rate=1000.0), settings, "a"), FastPublisher)
    assert isinstance(make_publisher(RunConfig(), settings, "b"), Publisher)


def test_the_publish_hot_path_writes_the_codec_layout():
    publisher = FastPublisher(local_settings(1), "unit", qos=1)
    publisher.publish(Outgoing("a/b", b"x" * 300))
    publisher.publish(Outgoing("a/b", b"yz"))
    expected = mq.encode_publish(b"a/b", b"x" * 300, 1, 1) + mq.encode_publish(b"a/b", b"yz", 1, 2)
    assert bytes(publisher._out) == expected
    qos0 = FastPublisher(local_settings(1), "unit", qos=0)
    qos0.publish(Outgoing("a/b", b"yz"))
    assert bytes(qos0._out) == mq.encode_publish(b"a/b", b"yz", 0)
    assert mq.max_remaining_length(1_048_576) == 1_048_572
    assert mq.max_remaining_length(130) == 127  # 1 + 1 + 127 fits, 1 + 2 + 128 does not
