"""MQTT source partition logic without a broker: what is acked, when, and in which order."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors import mqtt_source
from connectors.mqtt_source import MqttSource, MqttSourceSettings, source_settings
from schemas.settings import load_config


class FakeClient:
    """Records the packet ids of the PUBACK packets queued through paho's packet queue."""

    def __init__(self) -> None:
        self.acks: list[int] = []
        self.writes = 0

    def _packet_queue(self, command: int, packet: bytes, mid: int, qos: int) -> None:
        assert command == mqtt.PUBACK and len(packet) % 4 == 0
        for offset in range(0, len(packet), 4):
            assert packet[offset : offset + 2] == b"\x40\x02"  # PUBACK, remaining length 2
            self.acks.append(int.from_bytes(packet[offset + 2 : offset + 4], "big"))
        self.writes += 1


def message(mid: int, topic: str = "tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1", qos: int = 1):
    return SimpleNamespace(mid=mid, topic=topic, payload=b"{}", qos=qos, retain=False)


@pytest.fixture
def part(monkeypatch: pytest.MonkeyPatch):
    client = FakeClient()
    monkeypatch.setattr(mqtt_source._MqttPartition, "_connect", lambda self: client)
    config = MqttSourceSettings("127.0.0.1", 1, "u", "p", partitions=2, batch_size=3)
    partition = MqttSource(config).build_part("mqtt", "s1", None)
    partition._generation = 1
    return partition, client


def receive(partition, *mids: int, qos: int = 1) -> None:
    for mid in mids:
        partition._on_message(None, None, message(mid, qos=qos))


def test_lists_one_partition_per_session() -> None:
    config = MqttSourceSettings("h", 1, "u", "p", partitions=3)
    assert MqttSource(config).list_parts() == ["s0", "s1", "s2"]
    assert mqtt_source.client_id(config, "s2") == "f2-ingest-s2"


def test_acks_only_after_the_epoch_closed_in_receive_order(part) -> None:
    partition, client = part
    receive(partition, 5, 6, 7, 8)
    first = partition.next_batch()
    assert [m.topic for m in first] and len(first) == 3  # batch_size bounds a batch
    assert partition.next_batch()  # the 4th message, same epoch
    assert client.acks == []  # emitted, epoch still open: nothing acknowledged
    partition.snapshot()  # epoch end
    assert client.acks == []  # not before the runtime calls next_batch again
    assert partition.next_batch() == []
    assert client.acks == [5, 6, 7, 8]
    partition.snapshot()
    partition.next_batch()
    assert client.acks == [5, 6, 7, 8]  # nothing acked twice


def test_acks_of_an_epoch_go_out_as_one_write(part) -> None:
    partition, client = part
    receive(partition, *range(1, 301))
    while partition.next_batch():
        pass
    partition.snapshot()
    partition.next_batch()
    assert client.acks == list(range(1, 301)) and client.writes == 1


def test_pubacks_fall_back_to_ack_per_id_without_the_packet_queue() -> None:
    class OldClient:
        def __init__(self) -> None:
            self.acks: list[tuple[int, int]] = []

        def ack(self, mid: int, qos: int) -> None:
            self.acks.append((mid, qos))

    client = OldClient()
    mqtt_source.send_pubacks(client, [7, 65535])  # type: ignore[arg-type]
    assert client.acks == [(7, 1), (65535, 1)]


def test_pubacks_are_valid_mqtt_packets_for_paho() -> None:
    client = mqtt_source.new_client(
        MqttSourceSettings("127.0.0.1", 1, "", ""), "t", manual_ack=True
    )
    mqtt_source.send_pubacks(client, [1, 258, 65535])
    (packet,) = client._out_packet
    assert packet["packet"] == bytes([0x40, 2, 0, 1, 0x40, 2, 1, 2, 0x40, 2, 255, 255])
    assert packet["to_process"] == 12


def test_messages_of_an_open_epoch_wait_for_the_next_snapshot(part) -> None:
    partition, client = part
    receive(partition, 1)
    partition.next_batch()
    partition.snapshot()
    receive(partition, 2)
    partition.next_batch()  # acks 1, emits 2
    assert client.acks == [1]
    partition.next_batch()
    assert client.acks == [1]
    partition.snapshot()
    partition.next_batch()
    assert client.acks == [1, 2]


def test_messages_from_an_earlier_connection_are_not_acked(part) -> None:
    partition, client = part
    receive(partition, 1, 2)
    partition.next_batch()
    partition._generation = 2  # reconnected: the broker re-sends 1 and 2 on the new connection
    receive(partition, 1, 2)
    partition.next_batch()
    partition.snapshot()
    partition.next_batch()
    assert client.acks == [1, 2]  # only the new connection's deliveries
    assert mqtt_source.ACKS_SKIPPED.labels("s1")._value.get() >= 2


def test_qos0_messages_need_no_ack(part) -> None:
    partition, client = part
    receive(partition, 0, qos=0)
    assert len(partition.next_batch()) == 1
    partition.snapshot()
    partition.next_batch()
    assert client.acks == []


def test_emits_raw_messages_with_receive_time(part) -> None:
    partition, _ = part
    receive(partition, 9)
    (raw,) = partition.next_batch()
    assert raw.topic.startswith("tele/") and raw.payload == b"{}" and raw.qos == 1
    assert raw.received_at_ms > 1_600_000_000_000


def test_lean_path_messages_are_emitted_and_acked_like_paho_ones(part) -> None:
    partition, client = part
    partition._on_publish("tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1", b"{}", 41, True)
    receive(partition, 42)
    lean, stock = partition.next_batch()
    assert (lean.topic, lean.payload, lean.qos, lean.retain) == (stock.topic, b"{}", 1, True)
    assert lean.received_at_ms > 1_600_000_000_000
    partition.snapshot()
    partition.next_batch()
    assert client.acks == [41, 42]


def test_next_awake_polls_soon_when_idle_and_at_once_when_busy(part) -> None:
    partition, _ = part
    assert partition.next_awake() is not None
    receive(partition, 1)
    assert partition.next_awake() is None


def test_settings_from_environment() -> None:
    env = {
        "F2_STACK_DIR": "/nonexistent",
        "F2_INGEST_PARTITIONS": "6",
        "F2_INGEST_TOPICS": "stat/#, tele/#, x/#",
        "F2_INGEST_RECEIVE_MAXIMUM": "500",
        "F2_MQTT_TLS": "1",
    }
    pipeline = load_config(env)
    config = source_settings(pipeline.connections, pipeline.ingest)
    assert config.partitions == 6
    assert config.topic_filters == ("stat/#", "tele/#", "x/#")
    assert config.receive_maximum == 500 and config.tls
    assert config.state_dir == "/nonexistent/ingest-sessions"
    default = load_config({"F2_STACK_DIR": "/nonexistent"})
    assert source_settings(default.connections, default.ingest).topic_filters == (
        "stat/#",
        "tele/#",
    )


def publish_packet(topic: bytes, payload: bytes, mid: int, props: bytes = b"") -> bytes:
    """The variable header and payload of an MQTT v5 QoS 1 PUBLISH (after the fixed header)."""
    return len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + props + payload


def handle(client: mqtt.Client, command: int, packet: bytes) -> None:
    """Feed ``packet`` to the client's PUBLISH handler the way paho's reader does (bytearray)."""
    client._in_packet = {**client._in_packet, "command": command, "packet": bytearray(packet)}
    assert client._handle_publish() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS


@pytest.mark.parametrize("retain", [False, True])
def test_lean_publish_path_agrees_with_paho(retain: bool) -> None:
    config = MqttSourceSettings("127.0.0.1", 1, "", "")
    lean = mqtt_source.new_client(config, "lean", manual_ack=True)
    stock = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    got: list[tuple] = []
    lean.on_publish_received = lambda *args: got.append(args)
    stock.on_message = lambda _c, _u, m: got.append((m.topic, m.payload, m.mid, m.retain))
    command = 0x32 | retain
    packet = publish_packet(
        "tele/f2-ab/sensor-mode/J1/sensor-1 ü".encode(), b"\x00{}", 65534, b"\0"
    )
    handle(lean, command, packet)
    handle(stock, command, packet)
    assert got[0] == got[1] == ("tele/f2-ab/sensor-mode/J1/sensor-1 ü", b"\x00{}", 65534, retain)
    assert type(got[0][1]) is bytes  # the Kafka producer refuses a bytearray value


@pytest.mark.parametrize(
    ("command", "packet"),
    [
        (0x32, publish_packet(b"t/a", b"{}", 5, b"\x02\x01\x01")),  # has properties
        (0x30, b"\x00\x03t/a\x00{}"),  # QoS 0: no packet id
    ],
)
def test_lean_publish_path_leaves_the_rest_to_paho(command: int, packet: bytes) -> None:
    lean = mqtt_source.new_client(MqttSourceSettings("h", 1, "", ""), "lean", manual_ack=True)
    lean.on_publish_received = lambda *args: pytest.fail("lean path taken")
    messages: list[mqtt.MQTTMessage] = []
    lean.on_message = lambda _c, _u, m: messages.append(m)
    handle(lean, command, packet)
    assert [(m.topic, m.payload) for m in messages] == [("t/a", b"{}")]


def fixed_header(command: int, body: bytes) -> bytes:
    """``command`` and the MQTT variable-length remaining length of ``body``, then ``body``."""
    length, out = len(body), bytearray([command])
    while True:
        byte, length = length & 0x7F, length >> 7
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out) + body


PACKETS = st.one_of(
    st.builds(  # lean: QoS 1 without properties, any DUP/RETAIN, payloads across 1-2 byte lengths
        lambda flags, topic, payload, mid: fixed_header(
            0x32 | flags, publish_packet(topic.encode(), payload, mid, b"\0")
        ),
        st.sampled_from([0, 1, 8, 9]),
        st.text(min_size=1, max_size=40),
        st.binary(max_size=300),
        st.integers(1, 65535),
    ),
    st.builds(  # paho's: QoS 1 with a property (payload format indicator)
        lambda topic, payload, mid: fixed_header(
            0x32, publish_packet(topic.encode(), payload, mid, b"\x02\x01\x01")
        ),
        st.text(min_size=1, max_size=20),
        st.binary(max_size=50),
        st.integers(1, 65535),
    ),
    st.builds(  # paho's: QoS 0 (no packet id)
        lambda topic, payload: fixed_header(
            0x30, len(topic.encode()).to_bytes(2, "big") + topic.encode() + b"\0" + payload
        ),
        st.text(min_size=1, max_size=20),
        st.binary(max_size=50),
    ),
)


@contextmanager
def wired(client: mqtt.Client) -> Iterator[socket.socket]:
    """``client`` reading a socket pair (non-blocking, as paho's own); the broker's end."""
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    try:
        yield broker
    finally:
        client._sock = None
        ours.close()
        broker.close()


def handed_over(client: mqtt.Client) -> list[tuple]:
    """The list that collects what ``client`` hands over, as (topic, payload, mid, retain), by
    the lean path (a :class:`LeanClient`) or paho's own (``on_message``)."""
    got: list[tuple] = []
    if isinstance(client, mqtt_source.LeanClient):
        client.on_publish_received = lambda topic, payload, mid, retain: got.append(
            (topic, bytes(payload), mid, retain)
        )
    client.on_message = lambda _c, _u, m: got.append(
        (m.topic, bytes(m.payload), m.mid if m.qos else 0, m.retain)
    )
    return got


def received(client: mqtt.Client, stream: bytes, cuts: list[int], reads: int = 0) -> list[tuple]:
    """What ``client`` hands over when ``stream`` arrives on a real socket in pieces cut at
    ``cuts``, each piece followed by ``reads`` calls of ``loop_read`` (default: one per byte, as
    many as a network thread could need; the extra ones find nothing and return)."""
    got = handed_over(client)
    with wired(client) as broker:
        bounds = [0, *sorted(set(cuts)), len(stream)]
        for start, end in itertools.pairwise(bounds):
            broker.sendall(stream[start:end])
            for _ in range(reads or end - start):
                assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    return got


@settings(max_examples=100, deadline=None)
@given(
    packets=st.lists(PACKETS, min_size=1, max_size=25),
    cuts=st.lists(st.integers(0, 10_000), max_size=6),
)
def test_lean_reader_hands_over_what_paho_does_however_the_stream_is_cut(
    packets: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(packets)
    cuts = [cut % (len(stream) + 1) for cut in cuts]
    lean = mqtt_source.new_client(MqttSourceSettings("h", 1, "", ""), "lean", manual_ack=True)
    stock = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    assert received(lean, stream, cuts) == received(stock, stream, cuts)
    assert len(received(lean, stream, [])) == len(packets)


BIG_PACKETS = st.builds(  # lean QoS 1 PUBLISHes larger than a read chunk, and small ones
    lambda topic, size, fill, mid: fixed_header(
        0x32, publish_packet(topic.encode(), bytes([fill]) * size, mid, b"\0")
    ),
    st.text(min_size=1, max_size=20),
    st.one_of(
        st.integers(0, 200), st.integers(mqtt_source.READ_CHUNK - 64, 3 * mqtt_source.READ_CHUNK)
    ),
    st.integers(0, 255),
    st.integers(1, 65535),
)


def received_by_network_loop(
    client: mqtt.Client, stream: bytes, piece: int, pauses: list[bool]
) -> list[tuple]:
    """What ``client`` hands over when its network loop (paho's ``_loop``: ``select``, then
    ``loop_read`` only if the socket is readable) runs while ``stream`` arrives through a socket
    with flow control, ``piece`` bytes offered at a time; a :class:`LeanClient` is paused for
    reading by turns as ``pauses`` says, then unpaused until nothing more comes."""
    got = handed_over(client)
    turn, paused = iter(()), [False]
    if isinstance(client, mqtt_source.LeanClient):
        turn = iter(pauses * (len(stream) // max(piece, 1) + 2))
        client.read_paused = lambda: paused[0]
        client._state = mqtt_source._ConnectionState.MQTT_CS_CONNECTED
    with wired(client) as broker:
        broker.setblocking(False)
        sent = 0
        while sent < len(stream):
            try:
                sent += broker.send(stream[sent : sent + piece])
            except BlockingIOError:
                pass  # the socket buffers are full until the client reads
            paused[0] = next(turn, False)
            assert client.loop(timeout=0) == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
        paused[0] = False
        idle = 0
        while idle < 20:  # done once the loop finds nothing more twenty times running
            before = len(got)
            assert client.loop(timeout=0.001) == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            idle = idle + 1 if len(got) == before else 0
    return got


@settings(max_examples=60, deadline=None)
@given(
    packets=st.lists(st.one_of(PACKETS, BIG_PACKETS), min_size=1, max_size=12),
    piece=st.sampled_from([1, 7, 1000, 4096, 50_000, 100_000, 1 << 20]),
    pauses=st.lists(st.booleans(), min_size=1, max_size=8),
)
def test_lean_reader_in_the_network_loop_hands_over_everything_paused_or_not(
    packets: list[bytes], piece: int, pauses: list[bool]
) -> None:
    """The real loop calls ``loop_read`` only when ``select`` sees the socket readable: bytes a
    chunk already took off the socket must not wait there for more to arrive (a read pause or a
    packet larger than a chunk must not strand them)."""
    stream = b"".join(packets)
    piece = max(piece, len(stream) // 500)  # at most ~500 turns of the loop per example
    quick = MqttSourceSettings("h", 1, "", "", read_wait_ms=0)  # the waits: a test below
    lean = mqtt_source.new_client(quick, "lean", manual_ack=True)
    stock = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, manual_ack=True)
    want = received_by_network_loop(stock, stream, piece, [])
    assert len(want) == len(packets)
    poll_s, mqtt_source.PAUSE_POLL_S = mqtt_source.PAUSE_POLL_S, 0.0  # paused turns need no nap
    try:
        assert received_by_network_loop(lean, stream, piece, pauses) == want
    finally:
        mqtt_source.PAUSE_POLL_S = poll_s


def test_lean_reader_reads_many_packets_per_socket_read(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    recv = mqtt.Client._sock_recv

    def counted(self, bufsize: int) -> bytes:
        reads.append(bufsize)
        return recv(self, bufsize)

    monkeypatch.setattr(mqtt.Client, "_sock_recv", counted)
    packet = fixed_header(0x32, publish_packet(b"tele/f2-ab/x", b"{}", 7, b"\0"))
    lean = mqtt_source.new_client(MqttSourceSettings("h", 1, "", ""), "lean", manual_ack=True)
    assert len(received(lean, packet * 500, [], reads=1)) == 500  # one select() wake-up
    assert len(reads) == 1  # one recv() for all of them


def test_a_session_lets_bytes_gather_after_a_short_read_not_after_a_full_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    naps: list[float] = []
    monkeypatch.setattr(mqtt_source.time, "sleep", naps.append)
    config = MqttSourceSettings("h", 1, "", "", read_wait_ms=30)
    client = mqtt_source.new_client(config, "lean", manual_ack=True)
    client._state = mqtt_source._ConnectionState.MQTT_CS_CONNECTED
    got = handed_over(client)
    small = fixed_header(0x32, publish_packet(b"tele/f2-ab/x", b"{}", 7, b"\0"))
    aligned = fixed_header(0x32, publish_packet(b"tele/f2-ab/x", b"x" * 13, 7, b"\0"))
    per_chunk = mqtt_source.READ_CHUNK // len(aligned)
    assert per_chunk * len(aligned) == mqtt_source.READ_CHUNK  # packets end where a chunk does
    with wired(client) as broker:
        broker.sendall(small * 3)
        client.loop_read()
        assert naps == [0.03] and len(got) == 3  # woken by the first bytes: waited, then read
        broker.sendall(aligned * (2 * per_chunk + 10))
        counts = []
        for _ in range(3):
            client.loop_read()
            counts.append(len(got) - 3 - sum(counts))
        assert counts == [per_chunk, per_chunk, 10]  # a chunk per read, the rest last
        assert naps == [0.03, 0.03]  # after a full chunk more was waiting: no wait
        broker.sendall(small)
        client.loop_read()
        assert naps == [0.03, 0.03, 0.03]  # the last read was short again
    idle = mqtt_source.new_client(config, "idle", manual_ack=True)
    with wired(idle) as broker:
        broker.sendall(small)
        idle.loop_read()  # not connected yet (CONNACK and the like): no wait
    assert naps == [0.03, 0.03, 0.03]


def test_a_pause_stops_reading_at_the_packet_a_chunk_cut() -> None:
    """A chunk that ends inside a packet makes paho read the rest; that read must not bring in
    another whole chunk once reading is paused (which could end inside a packet again, and so
    on while the socket has bytes: the flood of 2026-12-07 went 4.6 MB past the budget)."""
    config = MqttSourceSettings("h", 1, "", "", read_wait_ms=0)
    client = mqtt_source.new_client(config, "lean", manual_ack=True)
    client._state = mqtt_source._ConnectionState.MQTT_CS_CONNECTED
    got = handed_over(client)
    client.read_paused = lambda: len(got) > 0  # over budget once anything was received
    packet = fixed_header(0x32, publish_packet(b"tele/f2-ab/x", b"p" * 400, 7, b"\0"))
    assert mqtt_source.READ_CHUNK % len(packet)  # chunks end inside packets
    stream = packet * (3 * mqtt_source.READ_CHUNK // len(packet))
    with wired(client) as broker:
        sender = threading.Thread(target=broker.sendall, args=(stream,))
        sender.start()
        time.sleep(0.2)  # the socket fills up (more than a chunk)
        client.loop_read()
        assert 0 < len(got) <= mqtt_source.READ_CHUNK // len(packet) + 1  # one chunk, no more
        client.read_paused = lambda: False
        while len(got) < stream.count(b"tele/"):
            client.loop_read()
        sender.join()


def test_payload_bytes_are_held_until_their_epoch_completes_and_bound_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mqtt_source._MqttPartition, "_connect", lambda self: FakeClient())
    config = MqttSourceSettings("h", 1, "u", "p", partitions=2, max_buffer_bytes=1600)
    source = MqttSource(config)  # one budget for the process's sessions
    first, second = (source.build_part("mqtt", p, None) for p in ("s0", "s1"))
    topic = "tele/f2-e4fd45f654be/sensor-mode/J1/sensor-1"
    for mid, partition in ((1, first), (2, second), (3, first)):
        partition._on_publish(topic, b"x" * 500, mid, False)
    assert source._budget.held() == 1500 and not first._over_budget()
    qos0 = SimpleNamespace(mid=0, topic=topic, payload=b"y" * 101, qos=0, retain=False)
    second._on_message(None, None, qos0)
    assert second._over_budget()  # 1601 > 1600: the session pauses
    assert not first._over_budget()  # a session sums the process's bytes every 1/64 budget...
    first._on_publish(topic, b"z" * 25, 4, False)
    assert first._over_budget()  # ...it receives: then it pauses too
    # A batch stops once it holds an eighth of the budget (200 bytes): one message each here.
    assert [len(first.next_batch()) for _ in range(3)] == [1, 1, 1]
    first.snapshot()
    assert source._budget.held() == 1626  # emitted and closed: held until the epoch completes
    first.next_batch()  # the epoch completed (acked)
    assert source._budget.held() == 601 and not second._over_budget()
    assert [len(second.next_batch()) for _ in range(2)] == [1, 1]
    second.snapshot()
    second.next_batch()  # QoS 0 bytes are released when their epoch completes too
    assert source._budget.held() == 0


def test_a_paused_client_reads_nothing_while_connected(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    monkeypatch.setattr(mqtt.Client, "loop_read", lambda self, max_packets=1: reads.append(1) or 0)
    client = mqtt_source.new_client(MqttSourceSettings("h", 1, "", ""), "c", manual_ack=True)
    client.read_paused = lambda: True
    assert client.loop_read() == 0  # not connected yet: reads (CONNACK)
    client._state = mqtt_source._ConnectionState.MQTT_CS_CONNECTED
    assert client.loop_read() == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
    assert reads == [1]  # connected and paused: nothing read
    client.read_paused = lambda: False
    client.loop_read()
    assert reads == [1, 1]


class SubscribingClient(FakeClient):
    def subscribe(self, topics: list) -> None:
        self.subscribed = topics


def connect(partition, present: bool) -> None:
    flags = SimpleNamespace(session_present=present)
    partition._on_connect(partition._client, None, flags, SimpleNamespace(is_failure=False), None)


def lost(partition_name: str) -> float:
    return mqtt_source.SESSIONS_LOST.labels(partition_name)._value.get()


def test_a_session_the_broker_answers_as_new_is_counted_as_lost(
    monkeypatch: pytest.MonkeyPatch, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(mqtt_source._MqttPartition, "_connect", lambda self: SubscribingClient())
    config = MqttSourceSettings("h", 1, "u", "p", partitions=1, state_dir=str(tmp_path))
    partition = MqttSource(config).build_part("mqtt", "s0", None)
    before = lost("s0")
    connect(partition, present=False)  # first connection: the session is created
    assert lost("s0") == before and (tmp_path / "f2-ingest-s0").exists()
    connect(partition, present=True)  # a reconnect that found it
    assert lost("s0") == before
    connect(partition, present=False)  # taken over with clean start, expired, broker reset
    assert lost("s0") == before + 1
    assert mqtt_source.SESSION_LOST_TIME.labels("s0")._value.get() > 1_700_000_000
    (record,) = [r for r in caplog.records if r.getMessage().startswith("mqtt session lost")]
    assert record.levelname == "ERROR" and record.client_id == "f2-ingest-s0"

    restarted = MqttSource(config).build_part("mqtt", "s0", None)  # a new process: the marker
    connect(restarted, present=False)
    assert lost("s0") == before + 2


def test_forgotten_sessions_are_not_alarms(tmp_path) -> None:
    markers = mqtt_source.SessionMarkers(str(tmp_path))
    markers.mark("f2-ingest-s3")
    assert mqtt_source.SessionMarkers(str(tmp_path)).exists("f2-ingest-s3")
    markers.forget("f2-ingest-s3")
    assert not mqtt_source.SessionMarkers(str(tmp_path)).exists("f2-ingest-s3")
    memory = mqtt_source.SessionMarkers("")  # no folder: this process only
    memory.mark("x")
    assert memory.exists("x") and not mqtt_source.SessionMarkers("").exists("x")


def test_batch_window_lets_messages_gather_after_a_batch(monkeypatch) -> None:
    client = FakeClient()
    monkeypatch.setattr(mqtt_source._MqttPartition, "_connect", lambda self: client)
    config = MqttSourceSettings("h", 1, "u", "p", batch_size=3, batch_wait_ms=50)
    partition = MqttSource(config).build_part("mqtt", "s0", None)
    partition._generation = 1
    receive(partition, 1)
    assert partition.next_awake() is None  # nothing emitted yet: take it now
    assert len(partition.next_batch()) == 1
    receive(partition, 2)
    awake = partition.next_awake()  # a small batch waits for the window
    assert awake is not None
    assert timedelta(0) < awake - datetime.now(UTC) <= timedelta(milliseconds=50)
    receive(partition, 3, 4)
    assert partition.next_awake() is None  # a full batch goes at once


def test_a_marker_that_cannot_be_written_is_logged_not_raised(tmp_path, caplog) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    markers = mqtt_source.SessionMarkers(str(blocked / "markers"))
    markers.mark("f2-ingest-s0")  # on a read-only or wrong path: must not raise
    assert markers.exists("f2-ingest-s0")
    assert "ingest session marker not written" in caplog.text
