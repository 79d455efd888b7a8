"""One MQTT connection per controller, each as the controller's own user (``--device-credentials``).

Delivery: each connection is a :class:`~simulator.publisher.Publisher` (or, in load mode, a
:class:`~simulator.fastmqtt.FastPublisher`) logged in as the controller (username = MAC), with
its guarantees: a message counts only once the broker acknowledged it with a success reason code.
The broker's ACL lets a device publish only ``stat/f2-<mac>/#`` and ``tele/f2-<mac>/#``, so a fault
message on another controller's or a made-up MAC's topic (``unknown_device``) is refused: at
QoS 1 the PUBACK says "not authorized" (0x87) and the message is counted as refused; at QoS 0
the broker would drop it without a word, so it is not sent and counted as refused right away.

:class:`DevicePublishers` has the interface of a single publisher, so the worker loop in
:mod:`simulator.load` drives it unchanged: a message goes out on the connection of the MAC in
its topic, and a message for a MAC without a connection goes out on the connections in turn
(a device speaking for another).
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable

import msgspec

from schemas.settings import Settings
from schemas.topics import mac_from_topic
from simulator.fastmqtt import FastPublisher
from simulator.messages import Outgoing
from simulator.publisher import Command, Publisher
from simulator.report import Tally

AnyPublisher = Publisher | FastPublisher
PublisherFactory = Callable[[Settings, str], AnyPublisher]


def device_settings(settings: Settings, mac: str, password: str) -> Settings:
    """``settings`` with the simulator's MQTT login replaced by device ``mac``'s."""
    return msgspec.structs.replace(settings, sim_username=mac, sim_password=password)


class DevicePublishers:
    """A connection per controller, behaving like one publisher.

    ``make(settings, client_id)`` builds one connection from the device's settings (see
    :func:`device_settings`); its client id is the controller's MAC, the only one the broker
    accepts for a device identity.
    """

    def __init__(
        self,
        settings: Settings,
        credentials: dict[str, str],
        qos: int,
        make: PublisherFactory,
    ) -> None:
        self.qos = qos
        self._own = Tally()  # QoS 0 messages refused without sending
        self._by_mac: dict[str, AnyPublisher] = {
            mac: make(device_settings(settings, mac, password), mac)
            for mac, password in credentials.items()
        }
        self._all = list(self._by_mac.values())
        self._turn = 0

    @property
    def tally(self) -> Tally:
        """The merged counts of every connection."""
        merged = Tally()
        merged.merge(self._own)
        for publisher in self._all:
            merged.merge(publisher.tally)
        return merged

    def connect(self, timeout_s: float = 10.0) -> None:
        """Connect every controller; ``ConnectionError`` names the first that fails."""
        for publisher in self._all:
            publisher.connect(timeout_s)

    def subscribe_commands(self, macs: list[str]) -> None:
        """Each connection subscribes to its own controller's ``cmnd/`` topics."""
        for mac in macs:
            publisher = self._by_mac.get(mac)
            if publisher is not None:
                publisher.subscribe_commands([mac])

    def publish(self, message: Outgoing) -> None:
        """Publish on the connection of the topic's controller (see the module docstring)."""
        publisher = self._by_mac.get(mac_from_topic(message.topic) or "")
        if publisher is not None:
            publisher.publish(message)
        elif self.qos == 0:
            self._own.refuse(message)
        elif self._all:
            self._turn = (self._turn + 1) % len(self._all)
            self._all[self._turn].publish(message)

    def service(self, timeout_s: float = 0.0) -> None:
        """Exchange packets on every connection, waiting up to ``timeout_s`` for any to speak."""
        for publisher in self._all:
            publisher.service(0.0)
        if timeout_s <= 0:
            return
        sockets = [fd for fd in (p.fileno() for p in self._all) if fd is not None]
        if sockets:
            select.select(sockets, [], [], timeout_s)
        else:
            time.sleep(timeout_s)
        for publisher in self._all:
            publisher.service(0.0)

    def take_commands(self) -> list[Command]:
        """The commands every connection received since the last call."""
        return [command for publisher in self._all for command in publisher.take_commands()]

    def pending(self) -> int:
        """Messages published but not yet acknowledged, over all connections."""
        return sum(publisher.pending() for publisher in self._all)

    def drain(self, timeout_s: float = 10.0) -> int:
        """Service every connection until all is acknowledged; the number still pending."""
        deadline = time.monotonic() + timeout_s
        while self.pending() and time.monotonic() < deadline:
            self.service(0.05)
        return self.pending()

    def close(self) -> None:
        """Disconnect every connection."""
        for publisher in self._all:
            publisher.close()
