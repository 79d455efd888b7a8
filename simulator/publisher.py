"""One MQTT v5 connection of the simulator, speaking for a set of controllers.

Delivery: messages are published at QoS 0 or 1 and never retained. A message is counted in the
:class:`~simulator.report.Tally` only when the broker acknowledged it with a success reason code
(QoS 1: the PUBACK's reason code, which can be "not authorized"; QoS 0: once paho wrote it to the
socket, the most a QoS 0 sender can know). At most ``window`` messages wait for their
acknowledgement; :meth:`Publisher.publish` blocks beyond that, so memory stays bounded at any
rate. Messages still unacknowledged when the run ends are not counted. A lost connection is
re-established; paho re-sends the unacknowledged QoS 1 messages (the broker may then deliver a
message twice, which a subscriber sees as a duplicate; the pipeline deduplicates by identity).

The connection also subscribes to its controllers' ``cmnd/f2-<mac>/#`` topics; commands are
collected for the caller (:meth:`Publisher.take_commands`), which answers them like a controller.
"""

from __future__ import annotations

import logging
import time

import msgspec
from paho.mqtt.client import Client, MQTTErrorCode, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from schemas.settings import Settings
from simulator.messages import Outgoing
from simulator.report import Tally

log = logging.getLogger("f2.simulator")
MQTT_V5 = 5
SUBSCRIBE_BATCH = 100


class Command(msgspec.Struct, frozen=True):
    """A ``cmnd/…`` message received for one of this connection's controllers."""

    topic: str
    payload: bytes


class Publisher:
    """A connected MQTT v5 client that publishes :class:`Outgoing` messages and counts acks.

    Single-threaded: the owner drives the network with :meth:`service` (paho's ``loop``), which
    is several times faster than paho's background thread at high rates.
    """

    def __init__(self, settings: Settings, client_id: str, qos: int, window: int = 1000) -> None:
        self.qos = qos
        self.tally = Tally()
        self._settings = settings
        self._window = window
        self._pending: dict[int, Outgoing] = {}
        self._early: dict[int, ReasonCode] = {}
        self._connected = False
        self._connect_error: str | None = None
        self._commands: list[Command] = []
        client = Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTT_V5)
        client.username_pw_set(settings.sim_username, settings.sim_password)
        client.max_inflight_messages_set(window)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect; ``ConnectionError`` if the broker refuses or does not answer in time."""
        self._client.connect(self._settings.mqtt_host, self._settings.mqtt_port, keepalive=30)
        deadline = time.monotonic() + timeout_s
        while not self._connected and self._connect_error is None:
            if time.monotonic() > deadline:
                self._connect_error = f"no CONNACK within {timeout_s} s"
                break
            self._client.loop(0.05)
        if self._connect_error is not None:
            user = self._settings.sim_username
            raise ConnectionError(f"MQTT connect as {user} failed: {self._connect_error}")

    def subscribe_commands(self, macs: list[str]) -> None:
        """Subscribe to ``cmnd/f2-<mac>/#`` of every controller this connection speaks for."""
        filters = [(f"cmnd/f2-{mac}/#", 1) for mac in macs]
        for start in range(0, len(filters), SUBSCRIBE_BATCH):
            self._client.subscribe(filters[start : start + SUBSCRIBE_BATCH])

    def publish(self, message: Outgoing) -> None:
        """Publish ``message`` (never retained); services the network while the window is full."""
        while len(self._pending) >= self._window:
            self.service(0.01)
        info = self._client.publish(message.topic, message.payload, self.qos, retain=False)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return
        if self.qos == 0 and info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return  # not sent: paho drops QoS 0 messages while disconnected
        early = self._early.pop(info.mid, None)
        if early is None:
            self._pending[info.mid] = message
        else:
            self._settle(message, early)

    def service(self, timeout_s: float = 0.0) -> None:
        """Exchange packets with the broker (waiting up to ``timeout_s``); reconnect if lost."""
        rc = self._client.loop(timeout_s)
        if rc in (MQTTErrorCode.MQTT_ERR_CONN_LOST, MQTTErrorCode.MQTT_ERR_NO_CONN):
            time.sleep(min(timeout_s, 0.5))
            try:
                self._client.reconnect()
            except OSError as exc:
                extra = {"stage": "simulator", "reason": str(exc)}
                log.warning("MQTT reconnect failed", extra=extra)

    def fileno(self) -> int | None:
        """The connection's socket descriptor (for ``select``), or None while disconnected."""
        sock = self._client.socket()
        return None if sock is None else sock.fileno()

    def take_commands(self) -> list[Command]:
        """The commands received since the last call."""
        out, self._commands = self._commands, []
        return out

    def pending(self) -> int:
        """Messages published but not yet acknowledged."""
        return len(self._pending)

    def drain(self, timeout_s: float = 10.0) -> int:
        """Service the network until every message is acknowledged; the number still pending."""
        deadline = time.monotonic() + timeout_s
        while self._pending and time.monotonic() < deadline:
            self.service(0.05)
        return len(self._pending)

    def close(self) -> None:
        """Disconnect cleanly."""
        self._client.disconnect()
        self._client.loop(0.1)

    def _settle(self, message: Outgoing, reason: ReasonCode) -> None:
        """Count an acknowledged message."""
        if reason.is_failure:
            self.tally.refuse(message)
            log.warning(
                "broker refused a message",
                extra={"stage": "simulator", "reason": str(reason), "topic": message.topic},
            )
        else:
            self.tally.add(message)

    def _on_publish(
        self, _client: Client, _userdata: object, mid: int, reason: ReasonCode, _props: Properties
    ) -> None:
        message = self._pending.pop(mid, None)
        if message is None:
            self._early[mid] = reason  # written (QoS 0) before publish() returned
        else:
            self._settle(message, reason)

    def _on_connect(
        self,
        _client: Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._connect_error = str(reason)
            log.warning(
                "MQTT connection refused", extra={"stage": "simulator", "reason": str(reason)}
            )
            return
        self._connected = True

    def _on_disconnect(
        self,
        _client: Client,
        _userdata: object,
        _flags: object,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("MQTT connection lost", extra={"stage": "simulator", "reason": str(reason)})

    def _on_message(self, _client: Client, _userdata: object, message: MQTTMessage) -> None:
        self._commands.append(Command(message.topic, message.payload))
