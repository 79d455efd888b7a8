"""Stateful event streams of access-control and alarm connectors (docs/PROTOCOL.md §1.1, §3).

Each connector plays short scenarios that follow its state, one message per step:

- access control: a card read (reader ``data`` as a bytes literal) unlocks a strike, the door
  opens, closes, and the strike returns; or an exit button is pressed and released and the door
  opens and closes; now and then a reader sends its light-indicator reply (non-printable bytes).
- alarm: a motion sensor sends a burst (motion, still motion, clear); sometimes a siren sounds
  and stops.

Messages use the docs/PROTOCOL.md §2 field names; with ``alias_rate`` a step uses the older
spellings (``state`` words, ``door_1``/``door_2``, extra scalar fields with units), which the
decoding core normalises. Every field besides ``timestamp`` becomes one event, so a message's
expected event count is ``len(fields)``. Commands from the cloud (``cmnd/…``) are answered by
:meth:`command`.

Load mode asks for many messages a second, so a stream hands out :class:`Step` values encoded
once and shared by all streams: strike, door, button, motion and siren states and light replies;
an aliased strike reading comes from a fixed pool of :data:`STRIKE_POOL` readings per strike and
state. Whole scenarios are pre-built for every alias mask (which steps use the older spellings),
so a new scenario costs a few random draws and a table look-up. Cards belong to a site population
of :data:`CARD_IDS` holders; a plain read is built once per reader and card, an aliased one (with
its signal strength) per message, from byte templates.
"""

from __future__ import annotations

import bisect
import functools
import random
from collections import deque

import msgspec

from schemas.topics import ACCESS_MODE, ALARM_MODE

EventValue = bool | int | float | str
LIGHT_REPLY = b"\x02\x02\x01\x00\x00\x00\x03\x03"
MAX_PULSE_S = 255
STRIKE_BITS = 6
STRIKE_POOL = 1 << STRIKE_BITS  # pre-encoded aliased readings per strike and state
SIGNALS = [f"{dbm} dBm" for dbm in range(-80, -29)]  # a reader's aliased signal strength
STRIKES, SIRENS = 0, 1  # the state tables a step sets (see Step.effect)
CARD_BITS = 10
_HOLDERS = random.Random("card-holders")
CARD_IDS = [_HOLDERS.getrandbits(32) for _ in range(1 << CARD_BITS)]  # the cards readers see

_encoder = msgspec.json.Encoder()


class EventMessage(msgspec.Struct, frozen=True):
    """One component message without its timestamp: type (``stat``/``tele``), component, fields."""

    type: str
    component: str
    fields: dict[str, EventValue]


def card_literal(card: bytes) -> str:
    """A card read as the controller sends it: a Python bytes literal as text."""
    return repr(card)


def fields_tail(fields: dict[str, EventValue]) -> bytes:
    """What follows the timestamp's text in ``{"timestamp": "…", **fields}`` as msgspec writes
    it: ``"}``, or ``",`` and the fields' JSON without its opening brace."""
    encoded = _encoder.encode(fields)
    return b'"}' if len(encoded) == 2 else b'",' + encoded[1:]


ROUTES: list[tuple[str, str]] = []  # route -> (type, component); all registered at import
_ROUTE_INDEX: dict[tuple[str, str], int] = {}


def route_index(type_: str, component: str) -> int:
    """The route (an index into :data:`ROUTES`) of messages of ``type_`` from ``component``."""
    key = (type_, component)
    index = _ROUTE_INDEX.get(key)
    if index is None:
        index = _ROUTE_INDEX[key] = len(ROUTES)
        ROUTES.append(key)
    return index


class Step(msgspec.Struct, frozen=True, gc=False):
    """One message of a stream, encoded once.

    ``route`` indexes :data:`ROUTES`; ``tail`` is :func:`fields_tail` of the message's fields;
    ``events`` is their count; ``effect`` is the state the message reports, ``(table, index, on)``
    with ``table`` :data:`STRIKES` or :data:`SIRENS`, or ``None``.
    """

    message: EventMessage
    route: int
    tail: bytes
    events: int
    effect: tuple[int, int, bool] | None = None


def state_effect(message: EventMessage) -> tuple[int, int, bool] | None:
    """The strike or siren state ``message`` reports, as :attr:`Step.effect`."""
    kind, _, index = message.component.rpartition("-")
    if kind not in ("strike", "siren"):
        return None
    value = message.fields.get("status", message.fields.get("state"))
    on = value is True or value in ("unlocked", "on")
    return (STRIKES if kind == "strike" else SIRENS, int(index), on)


def make_step(type_: str, component: str, fields: dict[str, EventValue]) -> Step:
    """``fields`` from ``component`` as a :class:`Step` (encoded here, once)."""
    message = EventMessage(type_, component, fields)
    route = route_index(type_, component)
    return Step(message, route, fields_tail(fields), len(fields), state_effect(message))


def _strike_steps(index: int, powered: bool) -> tuple[Step, list[Step]]:
    """Strike ``index`` reporting ``powered``: the plain step and the pool of aliased ones."""
    component = f"strike-{index}"
    plain = make_step("stat", component, {"status": powered})
    rng = random.Random(f"strike-pool-{index}-{powered}")
    pool = [
        make_step(
            "stat",
            component,
            {
                "state": "unlocked" if powered else "locked",
                "voltage": f"{rng.uniform(11.8, 12.4):.2f}V",
                "current": round(rng.uniform(0.2, 0.5) if powered else 0.0, 3),
            },
        )
        for _ in range(STRIKE_POOL)
    ]
    return plain, pool


def _door_step(aliased: bool, first: bool, second: bool) -> Step:
    if aliased:
        words = ("closed", "open")
        return make_step("stat", "door-sensors", {"door_1": words[first], "door_2": words[second]})
    return make_step("stat", "door-sensors", {"door-sensor-1": first, "door-sensor-2": second})


def _button_step(type_: str, aliased: bool, first: bool, second: bool) -> Step:
    if aliased:  # older firmware: 0/1 instead of booleans
        fields: dict[str, EventValue] = {"exit-button-1": int(first), "exit-button-2": int(second)}
        return make_step(type_, "exit-buttons", fields)
    return make_step(type_, "exit-buttons", {"exit-button-1": first, "exit-button-2": second})


def _flag_step(component: str, aliased: bool, value: bool) -> Step:
    if aliased:
        return make_step("stat", component, {"state": "active" if value else "inactive"})
    return make_step("stat", component, {"status": value})


def _siren_step(index: int, aliased: bool, on: bool) -> Step:
    if aliased:
        fields: dict[str, EventValue] = {
            "state": "on" if on else "off",
            "volume": "95 dB" if on else "0 dB",
        }
        return make_step("stat", f"siren-{index}", fields)
    return make_step("stat", f"siren-{index}", {"status": on})


def _light_step(index: int, signal: str | None) -> Step:
    fields: dict[str, EventValue] = {"data": card_literal(LIGHT_REPLY)}
    if signal is not None:
        fields["signal_strength"] = signal
    return make_step("tele", f"reader-{index}", fields)


_PAIRS = ((False, False), (False, True), (True, False), (True, True))
# Shared steps, indexed [aliased] then by component index (1-based) and state (False/True).
_STRIKE_SETS = {(i, p): _strike_steps(i, p) for i in (1, 2) for p in (False, True)}
_STRIKES = {i: (_STRIKE_SETS[i, False][0], _STRIKE_SETS[i, True][0]) for i in (1, 2)}
_STRIKE_POOLS = {i: (_STRIKE_SETS[i, False][1], _STRIKE_SETS[i, True][1]) for i in (1, 2)}
_DOORS = tuple({pair: _door_step(a, *pair) for pair in _PAIRS} for a in (False, True))
_BUTTONS = {
    t: tuple({pair: _button_step(t, a, *pair) for pair in _PAIRS} for a in (False, True))
    for t in ("tele", "stat")
}
_MOTION = tuple(
    {
        i: (_flag_step(f"motion-sensor-{i}", a, False), _flag_step(f"motion-sensor-{i}", a, True))
        for i in range(1, 6)
    }
    for a in (False, True)
)
_SIRENS = tuple(
    {i: (_siren_step(i, a, False), _siren_step(i, a, True)) for i in (1, 2)} for a in (False, True)
)
_LIGHTS = {i: _light_step(i, None) for i in (1, 2)}
_LIGHTS_ALIASED = {i: [_light_step(i, s) for s in SIGNALS] for i in (1, 2)}
_READERS = {i: (f"reader-{i}", route_index("tele", f"reader-{i}")) for i in (1, 2)}
_SIGNAL_TAILS = [b'","signal_strength":"%s"}' % s.encode() for s in SIGNALS]


def card_step(reader: int, card: int, signal: int | None = None) -> Step:
    """Reader ``reader`` reading the 32-bit ``card`` id (with ``SIGNALS[signal]`` when aliased),
    its tail written from byte templates (the same bytes :func:`fields_tail` gives)."""
    component, route = _READERS[reader]
    literal = f"b'{card:08X}'"
    if signal is None:
        tail = b'","data":"b\'%08X\'"}' % card
        return Step(EventMessage("tele", component, {"data": literal}), route, tail, 1)
    tail = b'","data":"b\'%08X\'' % card + _SIGNAL_TAILS[signal]
    fields: dict[str, EventValue] = {"data": literal, "signal_strength": SIGNALS[signal]}
    return Step(EventMessage("tele", component, fields), route, tail, 2)


# Whole scenarios (but a card read's first step), pre-built for every alias mask: bit ``i`` of
# a mask says whether the scenario's step ``i`` uses the older spellings. A scenario with an
# aliased strike exists in 2**COPY_BITS copies, each with its own draws from the strike pools.
MASK_BITS = 6  # the longest scenario (an exit) has six steps
COPY_BITS = 3
Scenario = tuple[Step, ...]


def _strike_of(index: int, powered: bool, aliased: int, rng: random.Random) -> Step:
    if aliased:
        return _STRIKE_POOLS[index][powered][rng.getrandbits(STRIKE_BITS)]
    return _STRIKES[index][powered]


def _card_rests() -> list[Scenario]:
    """After reader ``r`` reads a card, by ``mask << 4 | copy << 1 | r - 1`` (mask: 4 bits)."""
    rng = random.Random("card-entry")
    table: list[Scenario] = []
    for mask in range(16):
        for pick in range(16):
            reader = (pick & 1) + 1
            one, two = reader == 1, reader == 2
            table.append(
                (
                    _strike_of(reader, True, mask & 1, rng),
                    _DOORS[bool(mask & 2)][one, two],
                    _DOORS[bool(mask & 4)][False, False],
                    _strike_of(reader, False, mask & 8, rng),
                )
            )
    return table


def _exits() -> list[Scenario]:
    """Exit scenarios by ``mask << 6 | copy << 3 | second type << 2 | first type << 1 |
    button - 1`` (a button's type bit: ``tele`` or ``stat``)."""
    rng = random.Random("exit")
    types = ("tele", "stat")
    table: list[Scenario] = []
    for mask in range(1 << MASK_BITS):
        for pick in range(64):
            button = (pick & 1) + 1
            one, two = button == 1, button == 2
            first, second = types[pick >> 1 & 1], types[pick >> 2 & 1]
            table.append(
                (
                    _BUTTONS[first][bool(mask & 1)][one, two],
                    _BUTTONS[second][bool(mask & 2)][False, False],
                    _strike_of(button, True, mask & 4, rng),
                    _DOORS[bool(mask & 8)][one, two],
                    _DOORS[bool(mask & 16)][False, False],
                    _strike_of(button, False, mask & 32, rng),
                )
            )
    return table


def _motion_bursts() -> list[Scenario]:
    """Bursts by ``mask * 15 + pick`` (mask: 4 bits): sensor ``pick % 5 + 1`` reports motion
    ``1 + pick // 5`` times, then clear."""
    table: list[Scenario] = []
    for mask in range(16):
        for pick in range(15):
            sensor, count = pick % 5 + 1, 1 + pick // 5
            burst = [_MOTION[bool(mask >> i & 1)][sensor][True] for i in range(count)]
            table.append((*burst, _MOTION[bool(mask >> count & 1)][sensor][False]))
    return table


def _siren_cycles() -> list[Scenario]:
    """Siren ``pick + 1`` sounds and stops, by ``mask << 1 | pick`` (mask: 2 bits)."""
    return [
        (_SIRENS[bool(mask & 1)][pick + 1][True], _SIRENS[bool(mask & 2)][pick + 1][False])
        for mask in range(4)
        for pick in range(2)
    ]


_CARD_RESTS = _card_rests()
_EXITS = _exits()
_MOTION_BURSTS = _motion_bursts()
_SIREN_CYCLES = _siren_cycles()
_CARD_STEPS: list[Step | None] = [None] * (2 << CARD_BITS)  # plain reads, built on first use


def shared_steps() -> list[Step]:
    """Every pre-built step, shared by all streams (one entry per occurrence in a table)."""
    steps: list[Step] = [*_LIGHTS.values(), *(s for pool in _LIGHTS_ALIASED.values() for s in pool)]
    for index in (1, 2):
        steps.extend(_STRIKES[index])
        steps.extend(step for pool in _STRIKE_POOLS[index] for step in pool)
    for table in (_CARD_RESTS, _EXITS, _MOTION_BURSTS, _SIREN_CYCLES):
        steps.extend(step for scenario in table for step in scenario)
    return steps


@functools.cache
def alias_masks(alias_rate: float) -> list[float]:
    """The cumulative probabilities of the :data:`MASK_BITS`-bit alias masks when each step is
    aliased with probability ``alias_rate``: ``bisect(masks, random())`` draws a mask whose bits
    are independent, each set with that probability."""
    rate = min(max(alias_rate, 0.0), 1.0)
    cumulative, total = [], 0.0
    for mask in range(1 << MASK_BITS):
        aliased = mask.bit_count()
        total += rate**aliased * (1.0 - rate) ** (MASK_BITS - aliased)
        cumulative.append(total)
    cumulative[-1] = 2.0  # past any random(), whatever the rounding
    return cumulative


class EventStream:
    """The event scenarios of one access-control or alarm connector."""

    def __init__(self, mode: str, seed: str, alias_rate: float = 0.1) -> None:
        if mode not in (ACCESS_MODE, ALARM_MODE):
            raise ValueError(f"no event stream for {mode!r}")
        self.mode = mode
        self._access = mode == ACCESS_MODE
        self._rng = random.Random(seed)
        self._random = self._rng.random
        self._bits = self._rng.getrandbits
        self._alias_rate = alias_rate
        self._masks = alias_masks(alias_rate)
        self.queue: deque[Step] = deque()  # the rest of the current scenario
        self.strikes = {1: False, 2: False}
        self.sirens = {1: False, 2: False}
        self.states = (self.strikes, self.sirens)  # as indexed by Step.effect

    def next(self) -> EventMessage:
        """The next message of the current scenario (a new scenario starts when one ends)."""
        return self.next_step().message

    def next_step(self) -> Step:
        """The next message as its pre-encoded :class:`Step` (see :meth:`refill`)."""
        queue = self.queue
        if not queue:
            self.refill()
        step = queue.popleft()
        if step.effect is not None:
            self.apply(step)
        return step

    def apply(self, step: Step) -> None:
        """Track strike and siren state as their messages go out."""
        if step.effect is not None:
            table, index, on = step.effect
            self.states[table][index] = on

    def refill(self) -> None:
        """Queue the steps of a new scenario (a few random draws and a table look-up; a card
        read is the one step built here). Steps taken from :attr:`queue` must be
        :meth:`apply`-ed."""
        random, bits, queue = self._random, self._bits, self.queue
        roll = random()
        mask = bisect.bisect(self._masks, random())
        if self._access:
            if roll < 0.6:
                pick = bits(4)
                queue.append(self._card((pick & 1) + 1, mask & 1))
                queue.extend(_CARD_RESTS[(mask >> 1 & 15) << 4 | pick])
            elif roll < 0.9:
                queue.extend(_EXITS[mask << 6 | bits(6)])
            else:
                queue.append(self._light(bits(1) + 1))
        elif roll < 0.8:
            queue.extend(_MOTION_BURSTS[(mask & 15) * 15 + int(random() * 15)])
        else:
            queue.extend(_SIREN_CYCLES[(mask & 3) << 1 | bits(1)])

    def _between(self, low: int, high: int) -> int:
        """A uniform integer in ``low..high`` (``random.randint`` costs several times more)."""
        return low + int(self._random() * (high - low + 1))

    def _aliased(self) -> bool:
        return self._random() < self._alias_rate

    def _card(self, index: int, aliased: int) -> Step:
        """Reader ``index`` reads the card of one of the site's :data:`CARD_IDS` holders (a
        plain read is built once per reader and card, then shared)."""
        holder = self._bits(CARD_BITS)
        if aliased:
            return card_step(index, CARD_IDS[holder], self._between(0, len(SIGNALS) - 1))
        key = holder << 1 | (index - 1)
        step = _CARD_STEPS[key]
        if step is None:
            step = _CARD_STEPS[key] = card_step(index, CARD_IDS[holder])
        return step

    def _light(self, index: int) -> Step:
        if self._aliased():
            return _LIGHTS_ALIASED[index][self._between(0, len(SIGNALS) - 1)]
        return _LIGHTS[index]

    def strike_status(self, index: int) -> EventMessage:
        """The strike's current state as a ``stat`` message (the answer to a status request)."""
        return self._strike(index, self.strikes[index]).message

    def _strike(self, index: int, powered: bool) -> Step:
        if self._aliased():
            return _STRIKE_POOLS[index][powered][self._bits(STRIKE_BITS)]
        return _STRIKES[index][powered]

    def command(self, component: str, payload: bytes, success: bool) -> list[EventMessage]:
        """The messages a controller sends in answer to ``cmnd/…/<component>[/success]``.

        Strike: empty payload → status report; ``power-flag`` 0/1 → off/on; 2 → pulse (on now,
        off as the stream's next message). Siren: ``1``/``0``. Reader ``/success``: the light
        indicator reply. Anything else is ignored (a real controller ignores it too).
        """
        answers = self._answer(component, payload, success)
        for step in answers:
            self.apply(step)
        return [step.message for step in answers]

    def _answer(self, component: str, payload: bytes, success: bool) -> list[Step]:
        kind, _, index_text = component.rpartition("-")
        index = int(index_text) if index_text.isdigit() else 0
        access, alarm = self.mode == ACCESS_MODE, self.mode == ALARM_MODE
        if access and kind == "strike" and index in self.strikes and not success:
            return self._strike_command(index, payload)
        if alarm and kind == "siren" and index in self.sirens and payload.strip() in (b"0", b"1"):
            return [_SIRENS[self._aliased()][index][payload.strip() == b"1"]]
        if access and kind == "reader" and index in (1, 2) and success:
            return [self._light(index)]
        return []

    def _strike_command(self, index: int, payload: bytes) -> list[Step]:
        if not payload.strip():
            return [self._strike(index, self.strikes[index])]
        try:
            body = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return []
        flag = body.get("power-flag") if isinstance(body, dict) else None
        if flag in (0, 1):
            return [self._strike(index, flag == 1)]
        if flag == 2:
            self.queue.appendleft(_STRIKES[index][False])
            return [self._strike(index, True)]
        return []
