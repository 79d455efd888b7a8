"""Short-lived MQTT v5 clients for checks and tests: connect, publish QoS 1, subscribe, collect.

Every call waits for the broker's answer (CONNACK, PUBACK, SUBACK) with a timeout and returns its
reason code, so a check can tell "not authorized" (135) from success without guessing.
"""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ops.security.tls import CertFiles

NOT_AUTHORIZED = 135
TIMEOUT_S = 5.0


class ProbeError(RuntimeError):
    """The broker did not answer in time, or the connection failed below MQTT."""


class Probe:
    """One connected MQTT v5 session that records what the broker answers."""

    def __init__(self, client: mqtt.Client, session_present: bool = False) -> None:
        self.client = client
        self.session_present = session_present
        self.acks: dict[int, int] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.disconnects: list[int] = []
        self._changed = threading.Condition()
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_disconnect = self._on_disconnect

    def _note(self, mid: int, code: int) -> None:
        with self._changed:
            self.acks[mid] = code
            self._changed.notify_all()

    def _on_publish(self, _client, _userdata, mid, reason_code, _props) -> None:
        self._note(mid, reason_code.value)

    def _on_subscribe(self, _client, _userdata, mid, reason_codes, _props) -> None:
        self._note(mid, max(code.value for code in reason_codes))

    def _on_message(self, _client, _userdata, message) -> None:
        with self._changed:
            self.messages.append((message.topic, message.payload))
            self._changed.notify_all()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _props) -> None:
        with self._changed:
            self.disconnects.append(reason_code.value)
            self._changed.notify_all()

    def _wait_ack(self, mid: int, what: str) -> int:
        with self._changed:
            if not self._changed.wait_for(lambda: mid in self.acks, TIMEOUT_S):
                raise ProbeError(f"no {what} from the broker within {TIMEOUT_S:.0f}s")
            return self.acks[mid]

    def publish(self, topic: str, payload: bytes = b"{}") -> int:
        """Publish with QoS 1; the PUBACK reason code (0/16 accepted, 135 not authorized)."""
        info = self.client.publish(topic, payload, qos=1)
        return self._wait_ack(info.mid, "PUBACK")

    def subscribe(self, topic_filter: str) -> int:
        """Subscribe with QoS 1; the highest SUBACK reason code (0..2 granted, >= 128 refused)."""
        _rc, mid = self.client.subscribe(topic_filter, qos=1)
        return self._wait_ack(mid, "SUBACK")

    def wait_messages(self, count: int, timeout_s: float) -> list[tuple[str, bytes]]:
        """The messages received so far, waiting up to ``timeout_s`` for ``count`` of them."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.messages) >= count, timeout_s)
            return list(self.messages)

    def wait_disconnect(self, timeout_s: float) -> bool:
        """True if the broker closed this session within ``timeout_s``."""
        with self._changed:
            return self._changed.wait_for(lambda: bool(self.disconnects), timeout_s)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(
    host: str,
    port: int,
    username: str | None,
    password: str | None,
    certs: CertFiles | None = None,
    ca_file: str | None = None,
    client_id: str | None = None,
    session_expiry_s: int = 0,
) -> tuple[Probe | None, int]:
    """Open a session; ``(probe, 0)`` on success, ``(None, CONNACK reason code)`` on refusal.

    ``ca_file`` turns on TLS (server verified against it); ``certs`` adds a client certificate.
    ``client_id`` (default: a random one) with ``session_expiry_s`` > 0 resumes or keeps a
    persistent session (clean start off); the probe's ``session_present`` says which. A TLS or
    socket failure raises :class:`ProbeError`.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id or f"f2-probe-{uuid.uuid4().hex[:12]}",
        protocol=mqtt.MQTTv5,
    )
    if username is not None:
        client.username_pw_set(username, password)
    try:
        if certs is not None:
            client.tls_set(ca_certs=certs.ca_file, certfile=certs.cert_file, keyfile=certs.key_file)
        elif ca_file is not None:
            client.tls_set(ca_certs=ca_file)
    except (OSError, ValueError) as exc:
        raise ProbeError(f"TLS files unusable: {exc}") from exc
    answer: list[int] = []
    present: list[bool] = []
    done = threading.Event()

    def on_connect(_client, _userdata, flags, reason_code, _props) -> None:
        answer.append(reason_code.value)
        present.append(bool(flags.session_present))
        done.set()

    def on_disconnect(_client, _userdata, _flags, reason_code, _props) -> None:
        answer.append(reason_code.value or NOT_AUTHORIZED)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    props = None
    if session_expiry_s:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry_s
    try:
        client.connect(host, port, keepalive=30, clean_start=not session_expiry_s, properties=props)
    except OSError as exc:
        raise ProbeError(f"cannot connect to {host}:{port}: {exc}") from exc
    deadline = time.monotonic() + TIMEOUT_S
    while not done.is_set() and time.monotonic() < deadline:
        client.loop(timeout=0.05)
    if not answer:
        client.disconnect()
        raise ProbeError(f"no CONNACK from {host}:{port} within {TIMEOUT_S:.0f}s")
    if answer[0] != 0:
        client.disconnect()
        return None, answer[0]
    probe = Probe(client, bool(present and present[0]))
    client.loop_start()
    return probe, 0
