"""MQTT topic grammar of the F2 controller (docs/PROTOCOL.md §1).

``type "/f2-" mac "/" mode "/" connector "/" component [ "/success" ]`` with ``type`` one of
``cmnd``/``stat``/``tele``, the MAC as 12 hex digits (upper case accepted, normalised to lower
case), ``J1``..``J4`` (legacy ``1``..``4`` normalised to ``J<n>``) and a component that belongs to
the mode, with its index in range. :func:`parse_topic` is cached: a fleet repeats a bounded set
of topics. :func:`mac_from_topic` is the cheap key extraction for the ingest hop. Both caches
take only topics of at most :data:`CACHED_TOPIC_CHARS` characters (a grammatical topic has
fewer than 80), so a device sending long topics cannot grow them past about
``TOPIC_CACHE_SIZE × CACHED_TOPIC_CHARS`` characters each.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec

from schemas.reasons import BAD_TOPIC
from schemas.records import DecodeError

TYPES = frozenset({"cmnd", "stat", "tele"})
SENSOR_MODE = "sensor-mode"
ACCESS_MODE = "access-control-mode"
ALARM_MODE = "alarm-mode"

# mode -> (component kind, highest index; 0 = the component has no index)
MODE_COMPONENTS: dict[str, tuple[tuple[str, int], ...]] = {
    SENSOR_MODE: (("sensor", 6),),
    ACCESS_MODE: (("strike", 2), ("door-sensors", 0), ("reader", 2), ("exit-buttons", 0)),
    ALARM_MODE: (("siren", 2), ("motion-sensor", 5)),
}
CONNECTORS = {"J1": 1, "J2": 2, "J3": 3, "J4": 4, "1": 1, "2": 2, "3": 3, "4": 4}
TOPIC_CACHE_SIZE = 65536
CACHED_TOPIC_CHARS = 256
_HEX_DIGITS = "0123456789abcdef"


def _component_table() -> dict[str, dict[str, tuple[str, int]]]:
    """Every valid component name per mode, mapped to its (kind, index)."""
    table: dict[str, dict[str, tuple[str, int]]] = {}
    for mode, kinds in MODE_COMPONENTS.items():
        names: dict[str, tuple[str, int]] = {}
        for kind, highest in kinds:
            if highest == 0:
                names[kind] = (kind, 0)
            for index in range(1, highest + 1):
                names[f"{kind}-{index}"] = (kind, index)
        table[mode] = names
    return table


COMPONENTS = _component_table()


class TopicInfo(msgspec.Struct, frozen=True):
    """A parsed, normalised device topic.

    ``kind`` is the component without its index (``sensor``, ``strike``, ``door-sensors``…) and
    ``index`` its number (the sensor's pin position for ``sensor-<k>``; 0 when it has none).
    """

    type: str
    mac: str
    mode: str
    connector: str
    connector_number: int
    component: str
    kind: str
    index: int
    success: bool = False

    @property
    def topic(self) -> str:
        """The topic in its normalised spelling."""
        return format_topic(
            self.type, self.mac, self.mode, self.connector, self.component, self.success
        )


def normalise_mac(text: str) -> str | None:
    """``text`` as 12 lower-case hex digits, or None if it is not a MAC in that form."""
    mac = text.lower()
    if len(mac) != 12 or mac.strip(_HEX_DIGITS):
        return None
    return mac


def mac_from_topic(topic: str) -> str | None:
    """The controller MAC (lower case) of a topic, or None; reads the second level only. Cached
    for topics of at most :data:`CACHED_TOPIC_CHARS` characters."""
    if len(topic) > CACHED_TOPIC_CHARS:
        return _mac_from_topic(topic)
    return _cached_mac_from_topic(topic)


def _mac_from_topic(topic: str) -> str | None:
    start = topic.find("/") + 1
    end = topic.find("/", start)
    if start == 0 or end - start != 15 or not topic.startswith("f2-", start):
        return None
    return normalise_mac(topic[start + 3 : end])


_cached_mac_from_topic = lru_cache(maxsize=TOPIC_CACHE_SIZE)(_mac_from_topic)


def parse_topic(topic: str) -> TopicInfo | DecodeError:
    """Parse and validate a device topic; a topic off the grammar is ``bad_topic``. Cached for
    topics of at most :data:`CACHED_TOPIC_CHARS` characters."""
    if len(topic) > CACHED_TOPIC_CHARS:
        return _parse_topic(topic)
    return _cached_parse_topic(topic)


def _parse_topic(topic: str) -> TopicInfo | DecodeError:
    parts = topic.split("/")
    success = len(parts) == 6 and parts[5] == "success"
    if len(parts) != 5 and not success:
        return DecodeError(BAD_TOPIC, f"expected 5 levels (or 6 ending in /success): {topic!r}")
    kind_type, device, mode, connector, component = parts[:5]
    if kind_type not in TYPES:
        return DecodeError(BAD_TOPIC, f"unknown message type {kind_type!r}")
    mac = normalise_mac(device[3:]) if device.startswith("f2-") else None
    if mac is None:
        return DecodeError(BAD_TOPIC, f"device level is not f2-<12 hex digits>: {device!r}")
    components = COMPONENTS.get(mode)
    if components is None:
        return DecodeError(BAD_TOPIC, f"unknown mode {mode!r}")
    number = CONNECTORS.get(connector)
    if number is None:
        return DecodeError(BAD_TOPIC, f"unknown connector {connector!r}")
    found = components.get(component)
    if found is None:
        return DecodeError(BAD_TOPIC, f"component {component!r} does not belong to {mode}")
    return TopicInfo(kind_type, mac, mode, f"J{number}", number, component, *found, success)


_cached_parse_topic = lru_cache(maxsize=TOPIC_CACHE_SIZE)(_parse_topic)


def format_topic(
    type_: str, mac: str, mode: str, connector: str, component: str, success: bool = False
) -> str:
    """Build a device topic from its parts (no validation; see :func:`parse_topic`)."""
    suffix = "/success" if success else ""
    return f"{type_}/f2-{mac}/{mode}/{connector}/{component}{suffix}"
