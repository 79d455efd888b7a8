"""Decoding simulated messages with the decoding core, as the pipeline would."""

from __future__ import annotations

from collections import Counter

from schemas.decode import decode_message
from schemas.records import ControllerEntry, DecodeError, Event, RawMessage, Reading
from schemas.topics import mac_from_topic
from simulator.fleet import Fleet, controller_entry
from simulator.messages import Outgoing


def registry_of(fleet: Fleet) -> dict[str, ControllerEntry]:
    """The registry entries the fleet implies, by MAC (ghost MACs are absent)."""
    return {c.mac: controller_entry(c, i + 1) for i, c in enumerate(fleet.controllers)}


def decode(message: Outgoing, registry: dict[str, ControllerEntry]) -> list:
    """``message`` through ``schemas.decode.decode_message`` with its controller's entry."""
    mac = mac_from_topic(message.topic)
    raw = RawMessage(message.topic, message.payload)
    return decode_message(raw, registry.get(mac) if mac else None)


def outcome(results: list) -> tuple[int, int, Counter[str]]:
    """(readings, events, error reasons) of one decoded message."""
    readings = sum(1 for r in results if type(r) is Reading)
    events = sum(1 for r in results if type(r) is Event)
    errors = Counter(r.reason for r in results if type(r) is DecodeError)
    return readings, events, errors
