"""Payload parsing per component (docs/PROTOCOL.md §2): JSON bodies to timestamps, frames and event
fields.

Bodies are decoded with prebuilt msgspec decoders and bounded in size (the input limits of
:mod:`schemas.limits`); deep nesting and invalid JSON come back as errors, never exceptions. Event
fields are normalised: aliases (``state``, ``door_1``/``door_2``) to their canonical names,
booleans also from 0/1 and words, numbers written with a unit to floats, the reader's
bytes-literal text to text or hex.

A message over an input limit (too many fields, a field name that is too long or has other
characters than ``[A-Za-z0-9_.-]``, a text value that is too long) is one message-level
``bad_payload`` error and yields no event. Other field-level problems (a value that cannot be
read, text with a NUL character, which no database text column holds) are ``bad_payload`` errors
naming the field; the message's other fields still become events.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from functools import lru_cache
from typing import Any

import msgspec

from schemas.limits import DEFAULT_LIMITS, FIELD_NAME_CHARACTERS, field_name_ok
from schemas.reasons import BAD_JSON, BAD_PAYLOAD
from schemas.records import DecodeError
from schemas.settings import InputLimits

MAX_PAYLOAD_BYTES = DEFAULT_LIMITS.payload_bytes
MAX_TEXT_CHARS = DEFAULT_LIMITS.text_chars
NUMBER_CACHE_SIZE = 4096
EventValue = bool | float | str


class SensorPayload(msgspec.Struct, gc=False):
    """A sensor message: ``timestamp`` and ``data`` (the frame as hex); other fields are ignored.

    The timestamp is parsed by msgspec when it is RFC 3339 text (naive or not) or a number.
    """

    timestamp: datetime | int | float | None = None
    data: str | None = None


class LooseSensorPayload(msgspec.Struct):
    """A sensor message whose fields have unexpected types (checked field by field later)."""

    timestamp: Any = None
    data: Any = None


_SENSOR_DECODER = msgspec.json.Decoder(SensorPayload)
_LOOSE_SENSOR_DECODER = msgspec.json.Decoder(LooseSensorPayload)
_OBJECT_DECODER = msgspec.json.Decoder(dict[str, Any])

_TRUE_WORDS = ("true", "1", "on", "active", "unlocked", "open", "pressed")
_FALSE_WORDS = ("false", "0", "off", "inactive", "locked", "closed", "released")
BOOLEAN_WORDS: dict[str, bool] = {
    **dict.fromkeys(_TRUE_WORDS, True),
    **dict.fromkeys(_FALSE_WORDS, False),
}
# component kind -> (canonical boolean fields, alias -> canonical)
BOOLEAN_FIELDS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "strike": (("status",), {"state": "status"}),
    "siren": (("status",), {"state": "status"}),
    "motion-sensor": (("status",), {"state": "status"}),
    "door-sensors": (
        ("door-sensor-1", "door-sensor-2"),
        {"door_1": "door-sensor-1", "door_2": "door-sensor-2"},
    ),
    "exit-buttons": (("exit-button-1", "exit-button-2"), {}),
    "reader": ((), {}),
}
READER_FIELD = "data"
_NUMBER_WITH_UNIT = re.compile(
    r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(?:[^\d\s.+\-][^\d]{0,15})?\s*"
)


def _decode_error(exc: Exception) -> DecodeError:
    """The error for a body msgspec refused: not JSON, or JSON of the wrong shape or depth."""
    if isinstance(exc, RecursionError):
        return DecodeError(BAD_PAYLOAD, "payload is nested too deeply")
    if isinstance(exc, msgspec.ValidationError):
        return DecodeError(BAD_PAYLOAD, f"payload is not a usable JSON object: {exc}")
    return DecodeError(BAD_JSON, f"payload is not JSON: {exc}"[:200])


def too_large(payload: bytes, max_bytes: int) -> DecodeError:
    """The error for a body over the size limit."""
    return DecodeError(BAD_PAYLOAD, f"payload of {len(payload)} bytes exceeds {max_bytes}")


def decode_sensor_payload(
    payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES
) -> SensorPayload | LooseSensorPayload | DecodeError:
    """A sensor message body, or ``bad_json``/``bad_payload``.

    Typed decoding first; a body with an odd timestamp or data type is decoded again loosely,
    so the caller can name the problem (``bad_timestamp`` or ``bad_payload``).
    """
    if len(payload) > max_bytes:
        return too_large(payload, max_bytes)
    try:
        return _SENSOR_DECODER.decode(payload)
    except msgspec.ValidationError:
        pass
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return _decode_error(exc)
    try:
        return _LOOSE_SENSOR_DECODER.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return _decode_error(exc)


def decode_object(
    payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES
) -> dict[str, Any] | DecodeError:
    """An event message body as a JSON object, or ``bad_json``/``bad_payload``."""
    if len(payload) > max_bytes:
        return too_large(payload, max_bytes)
    try:
        return _OBJECT_DECODER.decode(payload)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        return _decode_error(exc)


def event_fields(
    kind: str, body: dict[str, Any], limits: InputLimits = DEFAULT_LIMITS
) -> list[tuple[str, EventValue | DecodeError]] | DecodeError:
    """The normalised ``(field, value)`` pairs of an event body, in body order.

    A field whose value cannot be read has a ``bad_payload`` error (labelled with the field) as
    its value. A body without any of the component's own fields, or over one of ``limits``, is a
    message-level ``bad_payload``. Where a field and its alias both appear, the canonical spelling
    wins.
    """
    fields = len(body) - ("timestamp" in body)
    if fields > limits.event_fields:
        return DecodeError(
            BAD_PAYLOAD, f"{fields} event fields exceed the limit of {limits.event_fields}"
        )
    specs = _FIELD_SPECS[kind]
    pairs: list[tuple[str, EventValue | DecodeError]] = []
    own_field = False
    for name, value in body.items():
        spec = specs.get(name, _EXTRA_FIELD)
        if spec is None:
            continue
        canonical, reader, is_alias = spec
        if canonical is None:
            if not field_name_ok(name, limits):
                return _bad_field_name(name, limits)
            canonical = name
        elif is_alias and canonical in body:
            continue
        else:
            own_field = True
        if type(value) is str and len(value) > limits.text_chars:
            detail = f"{canonical}: text of {len(value)} chars exceeds {limits.text_chars}"
            return DecodeError(BAD_PAYLOAD, detail)
        result = reader(value)
        if type(result) is DecodeError:
            result = DecodeError(result.reason, result.detail, canonical)
        elif type(result) is str and "\x00" in result:
            result = DecodeError(BAD_PAYLOAD, "text contains a NUL character", canonical)
        pairs.append((canonical, result))
    if not own_field:
        names = ", ".join(BOOLEAN_FIELDS[kind][0] or (READER_FIELD,))
        return DecodeError(BAD_PAYLOAD, f"{kind} payload has none of the fields {names}")
    return pairs


def _bad_field_name(name: str, limits: InputLimits) -> DecodeError:
    shown = name.encode("unicode_escape").decode("ascii")
    shown = shown if len(shown) <= 40 else shown[:40] + "…"
    detail = (
        f"event field name '{shown}' ({len(name)} chars) is not"
        f" {limits.field_name_chars} characters or fewer of [{FIELD_NAME_CHARACTERS}]"
    )
    return DecodeError(BAD_PAYLOAD, detail)


def read_boolean(value: object) -> bool | DecodeError:
    """A boolean from ``true``/``false``, 0/1, or a word (``on``, ``unlocked``, ``open``…)."""
    kind = type(value)
    if kind is bool:
        return value
    if kind is str:
        word = BOOLEAN_WORDS.get(value)
        if word is None:
            word = BOOLEAN_WORDS.get(value.strip().lower())
        if word is not None:
            return word
    elif (kind is int or kind is float) and value in (0, 1):
        return value == 1
    return DecodeError(BAD_PAYLOAD, f"not a boolean: {value!r}"[:200])


@lru_cache(maxsize=NUMBER_CACHE_SIZE)
def read_number(text: str) -> float | None:
    """The number in ``text``, optionally followed by a unit (``"27.93 °C"`` → 27.93), or None.

    Cached: a device repeats a bounded set of readings such as ``"12.04 V"``.
    """
    if len(text) > 64:
        return None
    match = _NUMBER_WITH_UNIT.fullmatch(text)
    if match is None:
        return None
    number = float(match.group(1))
    return number if math.isfinite(number) else None


def read_scalar(value: object) -> EventValue | DecodeError:
    """An extra field's value: boolean, number (also from text with a unit) or text (its length
    is bounded by :func:`event_fields`)."""
    kind = type(value)
    if kind is bool:
        return value
    if kind is str:
        number = read_number(value)
        if number is not None:
            return number
        return value
    if kind is int or kind is float:
        try:
            number = float(value)
        except OverflowError:
            return DecodeError(BAD_PAYLOAD, "number too large for a double")
        if not math.isfinite(number):
            return DecodeError(BAD_PAYLOAD, f"not a finite number: {value!r}")
        return number
    return DecodeError(BAD_PAYLOAD, f"not a scalar value: {type(value).__name__}")


def reader_text(value: object) -> str | DecodeError:
    """A reader's ``data``: bytes as text if printable ASCII, else lowercase hex."""
    if not isinstance(value, str):
        return DecodeError(BAD_PAYLOAD, f"reader data is not text: {type(value).__name__}")
    data = parse_bytes_literal(value, max_chars=len(value))
    if data is None:
        return DecodeError(BAD_PAYLOAD, f"reader data is not a bytes literal: {value[:80]!r}")
    text = data.decode("ascii") if data.isascii() else ""
    return text if text.isprintable() and len(text) == len(data) else data.hex()


_SIMPLE_ESCAPES = {
    "\\": 0x5C,
    "'": 0x27,
    '"': 0x22,
    "a": 0x07,
    "b": 0x08,
    "f": 0x0C,
    "n": 0x0A,
    "r": 0x0D,
    "t": 0x09,
    "v": 0x0B,
}
_OCTAL = "01234567"
_HEX = "0123456789abcdefABCDEF"
_LITERAL_STARTS = ("b'", 'b"', "B'", 'B"')
_ALL_HEX_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2})+")


def parse_bytes_literal(text: str, max_chars: int = MAX_TEXT_CHARS) -> bytes | None:
    """The bytes of a Python bytes literal (``b'..'``/``b".."``) without ``eval``, or None.

    Plain printable ASCII text without the ``b'..'`` wrapper is taken as its own bytes. At most
    ``max_chars`` characters are accepted (the reader's caller bounds them by the input limits).
    """
    if len(text) > max_chars or not text.isascii():
        return None
    if text[:2] not in _LITERAL_STARTS:
        return text.encode("ascii") if text.isprintable() else None
    quote = text[1]
    if len(text) < 3 or text[-1] != quote:
        return None
    body = text[2:-1]
    if "\\" not in body:
        return None if quote in body else body.encode("ascii")
    if _ALL_HEX_ESCAPES.fullmatch(body):
        return bytes.fromhex(body.replace("\\x", ""))
    return _unescape(body, quote)


def _unescape(body: str, quote: str) -> bytes | None:
    """Resolve the escapes of a bytes literal's body as Python does; None if it is malformed."""
    out = bytearray()
    index, size = 0, len(body)
    while index < size:
        char = body[index]
        index += 1
        if char == quote:
            return None
        if char != "\\":
            out.append(ord(char))
            continue
        if index == size:
            return None
        char = body[index]
        index += 1
        if char in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[char])
        elif char == "\n":
            continue
        elif char == "x":
            digits = body[index : index + 2]
            if len(digits) != 2 or digits[0] not in _HEX or digits[1] not in _HEX:
                return None
            out.append(int(digits, 16))
            index += 2
        elif char in _OCTAL:
            end = index
            while end < size and end - index < 2 and body[end] in _OCTAL:
                end += 1
            code = int(body[index - 1 : end], 8)
            if code > 0xFF:
                return None
            out.append(code)
            index = end
        else:
            out += b"\\" + char.encode("ascii")
    return bytes(out)


FieldSpec = tuple[str | None, Callable[[object], Any], bool]


def _field_specs() -> dict[str, dict[str, FieldSpec | None]]:
    """Per component kind: each known field name -> (canonical name, reader, is an alias).

    ``timestamp`` maps to None (not an event field); unknown names are extra scalar fields.
    """
    specs: dict[str, dict[str, FieldSpec | None]] = {}
    for kind, (booleans, aliases) in BOOLEAN_FIELDS.items():
        table: dict[str, FieldSpec | None] = {"timestamp": None}
        table.update({name: (name, read_boolean, False) for name in booleans})
        table.update({alias: (name, read_boolean, True) for alias, name in aliases.items()})
        if kind == "reader":
            table[READER_FIELD] = (READER_FIELD, reader_text, False)
        specs[kind] = table
    return specs


_FIELD_SPECS = _field_specs()
_EXTRA_FIELD: FieldSpec = (None, read_scalar, False)
