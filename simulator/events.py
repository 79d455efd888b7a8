"""Stateful event streams of access-control and alarm connectors (SPEC §1, §3).

Each connector plays short scenarios that follow its state, one message per step:

- access control: a card read (reader ``data`` as a bytes literal) unlocks a strike, the door
  opens, closes, and the strike returns; or an exit button is pressed and released and the door
  opens and closes; now and then a reader sends its light-indicator reply (non-printable bytes).
- alarm: a motion sensor sends a burst (motion, still motion, clear); sometimes a siren sounds
  and stops.

Messages use the SPEC §3 field names; with ``alias_rate`` a step uses the older spellings
(``state`` words, ``door_1``/``door_2``, extra scalar fields with units), which the decoding core
normalises. Every field besides ``timestamp`` becomes one event, so a message's expected event
count is ``len(fields)``. Commands from the cloud (``cmnd/…``) are answered by :meth:`command`.
"""

from __future__ import annotations

import random
from collections import deque

import msgspec

from schemas.topics import ACCESS_MODE, ALARM_MODE

EventValue = bool | int | float | str
LIGHT_REPLY = b"\x02\x02\x01\x00\x00\x00\x03\x03"
MAX_PULSE_S = 255


class EventMessage(msgspec.Struct, frozen=True):
    """One component message without its timestamp: type (``stat``/``tele``), component, fields."""

    type: str
    component: str
    fields: dict[str, EventValue]


def card_literal(card: bytes) -> str:
    """A card read as the controller sends it: a Python bytes literal as text."""
    return repr(card)


class EventStream:
    """The event scenarios of one access-control or alarm connector."""

    def __init__(self, mode: str, seed: str, alias_rate: float = 0.1) -> None:
        if mode not in (ACCESS_MODE, ALARM_MODE):
            raise ValueError(f"no event stream for {mode!r}")
        self.mode = mode
        self._rng = random.Random(seed)
        self._alias_rate = alias_rate
        self._queue: deque[EventMessage] = deque()
        self.strikes = {1: False, 2: False}
        self.sirens = {1: False, 2: False}

    def next(self) -> EventMessage:
        """The next message of the current scenario (a new scenario starts when one ends)."""
        if not self._queue:
            self._queue.extend(self._scenario())
        message = self._queue.popleft()
        self._apply(message)
        return message

    def _apply(self, message: EventMessage) -> None:
        """Track strike and siren state as their messages go out."""
        if not message.component.startswith(("strike-", "siren-")):
            return
        kind, _, index = message.component.rpartition("-")
        table = self.strikes if kind == "strike" else self.sirens
        value = message.fields.get("status", message.fields.get("state"))
        table[int(index)] = value is True or value in ("unlocked", "on")

    def _between(self, low: int, high: int) -> int:
        """A uniform integer in ``low..high`` (``random.randint`` costs several times more, and
        this runs for most messages of load mode)."""
        return low + int(self._rng.random() * (high - low + 1))

    def _aliased(self) -> bool:
        return self._rng.random() < self._alias_rate

    def _scenario(self) -> list[EventMessage]:
        if self.mode == ACCESS_MODE:
            roll = self._rng.random()
            if roll < 0.6:
                return self._card_entry()
            if roll < 0.9:
                return self._exit()
            return [self._reader(self._between(1, 2), LIGHT_REPLY)]
        if self._rng.random() < 0.8:
            return self._motion_burst()
        return self._siren_cycle()

    def _card_entry(self) -> list[EventMessage]:
        rng = self._rng
        reader = self._between(1, 2)
        card = f"{rng.getrandbits(32):08X}".encode()
        return [
            self._reader(reader, card),
            self._strike(reader, True),
            self._doors(reader == 1, reader == 2),
            self._doors(False, False),
            self._strike(reader, False),
        ]

    def _exit(self) -> list[EventMessage]:
        button = self._between(1, 2)
        return [
            self._buttons(button == 1, button == 2),
            self._buttons(False, False),
            self._strike(button, True),
            self._doors(button == 1, button == 2),
            self._doors(False, False),
            self._strike(button, False),
        ]

    def _motion_burst(self) -> list[EventMessage]:
        sensor = self._between(1, 5)
        repeats = self._between(0, 2)
        burst = [self._flag("motion-sensor", sensor, True) for _ in range(1 + repeats)]
        return [*burst, self._flag("motion-sensor", sensor, False)]

    def _siren_cycle(self) -> list[EventMessage]:
        siren = self._between(1, 2)
        return [self._siren(siren, True), self._siren(siren, False)]

    def _reader(self, index: int, card: bytes) -> EventMessage:
        fields: dict[str, EventValue] = {"data": card_literal(card)}
        if self._aliased():
            fields["signal_strength"] = f"{self._between(-80, -30)} dBm"
        return EventMessage("tele", f"reader-{index}", fields)

    def strike_status(self, index: int) -> EventMessage:
        """The strike's current state as a ``stat`` message (the answer to a status request)."""
        return self._strike(index, self.strikes[index])

    def _strike(self, index: int, powered: bool) -> EventMessage:
        if self._aliased():
            fields: dict[str, EventValue] = {
                "state": "unlocked" if powered else "locked",
                "voltage": f"{self._rng.uniform(11.8, 12.4):.2f}V",
                "current": round(self._rng.uniform(0.2, 0.5) if powered else 0.0, 3),
            }
        else:
            fields = {"status": powered}
        return EventMessage("stat", f"strike-{index}", fields)

    def _doors(self, first: bool, second: bool) -> EventMessage:
        if self._aliased():
            words = ("closed", "open")
            fields: dict[str, EventValue] = {"door_1": words[first], "door_2": words[second]}
        else:
            fields = {"door-sensor-1": first, "door-sensor-2": second}
        return EventMessage("stat", "door-sensors", fields)

    def _buttons(self, first: bool, second: bool) -> EventMessage:
        kind = "tele" if self._rng.random() < 0.5 else "stat"
        if self._aliased():  # older firmware: 0/1 instead of booleans
            fields: dict[str, EventValue] = {
                "exit-button-1": int(first),
                "exit-button-2": int(second),
            }
        else:
            fields = {"exit-button-1": first, "exit-button-2": second}
        return EventMessage(kind, "exit-buttons", fields)

    def _flag(self, kind: str, index: int, value: bool) -> EventMessage:
        if self._aliased():
            word = "active" if value else "inactive"
            return EventMessage("stat", f"{kind}-{index}", {"state": word})
        return EventMessage("stat", f"{kind}-{index}", {"status": value})

    def _siren(self, index: int, on: bool) -> EventMessage:
        fields: dict[str, EventValue] = {"status": on}
        if self._aliased():
            fields = {"state": "on" if on else "off", "volume": "95 dB" if on else "0 dB"}
        return EventMessage("stat", f"siren-{index}", fields)

    def command(self, component: str, payload: bytes, success: bool) -> list[EventMessage]:
        """The messages a controller sends in answer to ``cmnd/…/<component>[/success]``.

        Strike: empty payload → status report; ``power-flag`` 0/1 → off/on; 2 → pulse (on now,
        off as the stream's next message). Siren: ``1``/``0``. Reader ``/success``: the light
        indicator reply. Anything else is ignored (a real controller ignores it too).
        """
        answers = self._answer(component, payload, success)
        for message in answers:
            self._apply(message)
        return answers

    def _answer(self, component: str, payload: bytes, success: bool) -> list[EventMessage]:
        kind, _, index_text = component.rpartition("-")
        index = int(index_text) if index_text.isdigit() else 0
        access, alarm = self.mode == ACCESS_MODE, self.mode == ALARM_MODE
        if access and kind == "strike" and index in self.strikes and not success:
            return self._strike_command(index, payload)
        if alarm and kind == "siren" and index in self.sirens and payload.strip() in (b"0", b"1"):
            return [self._siren(index, payload.strip() == b"1")]
        if access and kind == "reader" and index in (1, 2) and success:
            return [self._reader(index, LIGHT_REPLY)]
        return []

    def _strike_command(self, index: int, payload: bytes) -> list[EventMessage]:
        if not payload.strip():
            return [self.strike_status(index)]
        try:
            body = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return []
        flag = body.get("power-flag") if isinstance(body, dict) else None
        if flag in (0, 1):
            return [self._strike(index, flag == 1)]
        if flag == 2:
            self._queue.appendleft(EventMessage("stat", f"strike-{index}", {"status": False}))
            return [self._strike(index, True)]
        return []
