"""Mosquitto's own counters (``$SYS/broker/...``) as Prometheus metrics of the health service.

One MQTT session (the pipeline's credentials, which may read ``$SYS/#``) subscribes to
``$SYS/broker/#`` and keeps the latest value of each topic below; a collector exports them. The
broker publishes them every ``sys_interval`` seconds (5 on the local stack) and only when changed,
so a counter not published yet reads 0. ``f2_mqtt_broker_sys_connected`` is 0 while the session is
down (the values are then the last ones received).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.settings import Settings

log = logging.getLogger("f2.health")

# $SYS topic (below $SYS/broker/) -> (metric name, type, help)
SYS_METRICS: dict[str, tuple[str, str, str]] = {
    "clients/connected": ("f2_mqtt_broker_clients_connected", "gauge", "Clients connected"),
    "clients/total": (
        "f2_mqtt_broker_clients_total",
        "gauge",
        "Clients with a session (connected or persistent)",
    ),
    "messages/stored": (
        "f2_mqtt_broker_messages_stored",
        "gauge",
        "Messages held by the broker: queued for persistent sessions, in flight, retained",
    ),
    "store/messages/bytes": (
        "f2_mqtt_broker_store_bytes",
        "gauge",
        "Payload bytes of the messages held by the broker",
    ),
    "publish/messages/dropped": (
        "f2_mqtt_broker_messages_dropped",
        "counter",
        "Messages the broker dropped (queue limits): acknowledged to the device, then lost",
    ),
    "messages/received": (
        "f2_mqtt_broker_packets_received",
        "counter",
        "MQTT packets of any kind received by the broker",
    ),
    "publish/messages/sent": (
        "f2_mqtt_broker_publish_sent",
        "counter",
        "PUBLISH packets sent by the broker",
    ),
    "uptime": ("f2_mqtt_broker_uptime_seconds", "gauge", "Seconds since the broker started"),
}


class BrokerStats(Collector):
    """Subscribes to ``$SYS/broker/#`` in the background; a collector of the latest values."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._values: dict[str, float] = {}
        self._connected = False
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None

    def start(self) -> None:
        """Connect in the background (paho reconnects by itself)."""
        from connectors.mqtt_source import RECONNECT_DELAY_S

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"f2-health-sys-{os.getpid()}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if self._settings.mqtt_username:
            client.username_pw_set(self._settings.mqtt_username, self._settings.mqtt_password)
        if self._settings.mqtt_tls:
            client.tls_set(ca_certs=self._settings.mqtt_ca_file or None)
        client.reconnect_delay_set(*RECONNECT_DELAY_S)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.connect_async(self._settings.mqtt_host, self._settings.mqtt_port, keepalive=30)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: object, _f, reason_code, _p) -> None:
        if reason_code.is_failure:
            log.warning(
                "broker $SYS session refused",
                extra={"stage": "health", "reason": str(reason_code)},
            )
            return
        self._connected = True
        client.subscribe("$SYS/broker/#", qos=0)

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f, reason_code, _p) -> None:
        self._connected = False

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        key = msg.topic.removeprefix("$SYS/broker/")
        if key not in SYS_METRICS:
            return
        try:
            value = float(msg.payload.split()[0])
        except (ValueError, IndexError):
            return
        with self._lock:
            self._values[key] = value

    def values(self) -> dict[str, float]:
        """The latest value per metric name (0 for what the broker has not published)."""
        with self._lock:
            return {name: self._values.get(key, 0.0) for key, (name, _, _) in SYS_METRICS.items()}

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "f2_mqtt_broker_sys_connected",
            "1 while the health service's $SYS session is connected",
            value=1.0 if self._connected else 0.0,
        )
        values = self.values()
        for name, kind, documentation in SYS_METRICS.values():
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, documentation, value=values[name])
