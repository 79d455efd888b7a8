"""The broker's admin channel: commands to Mosquitto's dynamic-security plugin over MQTT.

Device identities live in the plugin (``$CONTROL/dynamic-security/v1``), on every broker the
pipeline meets: the local stack, compose and an external broker. An operator identity (the
plugin's admin client) publishes a batch of commands there and reads the answers on
``$CONTROL/dynamic-security/v1/response``; each answer names its command and carries ``error``
when it failed. Nothing here touches broker files, so the same commands work against a broker
on another host (TLS with ``ca_file``).
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = CONTROL_TOPIC + "/response"
TIMEOUT_S = 10.0


class AdminError(RuntimeError):
    """The admin channel could not be reached, refused the login, or a command failed."""


class AdminSettings(msgspec.Struct, frozen=True):
    """Where the admin channel is and who speaks on it (``F2_MQTT_ADMIN_*``)."""

    host: str
    port: int
    username: str
    password: str
    ca_file: str = ""


class DynsecAdmin:
    """One admin session; :meth:`run` sends commands and returns the plugin's answers."""

    def __init__(self, settings: AdminSettings, timeout_s: float = TIMEOUT_S) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._answers: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition()
        self._connected = threading.Event()
        self._refused: list[str] = []
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"f2-admin-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(settings.username, settings.password)
        if settings.ca_file:
            client.tls_set(ca_certs=settings.ca_file)
        client.on_connect = self._on_connect
        client.on_message = self._on_message
        self._client = client

    def __enter__(self) -> DynsecAdmin:
        s = self._settings
        try:
            self._client.connect(s.host, s.port, keepalive=30)
        except OSError as exc:
            raise AdminError(f"admin channel {s.host}:{s.port} unreachable: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(self._timeout_s):
            self.close()
            raise AdminError(f"no answer from the admin channel {s.host}:{s.port}")
        if self._refused:
            self.close()
            raise AdminError(
                f"admin channel {s.host}:{s.port} refused {s.username}: {self._refused[0]}"
            )
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: object, _f: object, reason, _p: object) -> None:
        if reason.is_failure:
            self._refused.append(str(reason))
        else:
            client.subscribe(RESPONSE_TOPIC, qos=1)
        self._connected.set()

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        try:
            responses = json.loads(message.payload).get("responses", [])
        except ValueError:
            return
        with self._changed:
            for response in responses:
                key = response.get("correlationData")
                if key is not None:
                    self._answers[key] = response
            self._changed.notify_all()

    def run(self, *commands: dict[str, Any]) -> list[dict[str, Any]]:
        """Send ``commands`` in one message; the answers in the same order (``error`` set where
        a command failed). Raises :class:`AdminError` when answers do not arrive."""
        keys = [uuid.uuid4().hex for _ in commands]
        payload = {
            "commands": [{**c, "correlationData": k} for c, k in zip(commands, keys, strict=True)]
        }
        info = self._client.publish(CONTROL_TOPIC, json.dumps(payload), qos=1)
        info.wait_for_publish(self._timeout_s)
        with self._changed:
            done = self._changed.wait_for(
                lambda: all(k in self._answers for k in keys), self._timeout_s
            )
            if not done:
                raise AdminError(
                    "no answer from the dynamic-security plugin (is the admin client allowed on"
                    f" {CONTROL_TOPIC}, and is the plugin loaded on this listener?)"
                )
            return [self._answers.pop(k) for k in keys]

    def checked(self, *commands: dict[str, Any], tolerate: tuple[str, ...] = ()) -> list[dict]:
        """:meth:`run`, raising on an error that is not in ``tolerate`` (e.g. "already exists"
        for idempotent creation)."""
        answers = self.run(*commands)
        for command, answer in zip(commands, answers, strict=True):
            error = answer.get("error")
            if error and not any(word in error for word in tolerate):
                raise AdminError(f"{command['command']}: {error}")
        return answers
