"""Input limits (SPEC §3): what one device message may hold, in one settings struct.

A message over any limit is ONE dead letter (``bad_payload``, or ``bad_topic`` for the topic),
never several, and none of its content is stored: a hostile or buggy controller can cost the
pipeline at most one record per message, and nothing it sends can reach the database's own limits
(an index row of a 4,000-character field name) or grow a cache keyed by topic without bound.

| limit | default | variable | checked by |
|---|---|---|---|
| payload size | 65,536 bytes | ``F2_LIMIT_PAYLOAD_BYTES`` | ingest (``bad_payload``), decode |
| topic length | 256 bytes (UTF-8) | ``F2_LIMIT_TOPIC_BYTES`` | ingest (``bad_topic``), decode |
| event field name | 64 characters of ``[A-Za-z0-9_.-]`` | ``F2_LIMIT_FIELD_NAME_CHARS`` | decode |
| event fields per message | 32 (``timestamp`` not counted) | ``F2_LIMIT_EVENT_FIELDS`` | decode |
| text value | 1,023 characters | ``F2_LIMIT_TEXT_CHARS`` | decode |

The text limit covers an event's text value and a reader's ``data`` (the bytes literal as sent).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

import msgspec

FIELD_NAME_CHARACTERS = "A-Za-z0-9_.-"


class InputLimits(msgspec.Struct, frozen=True):
    """The most one device message may hold (``F2_LIMIT_*``)."""

    payload_bytes: int = 65536
    topic_bytes: int = 256
    field_name_chars: int = 64
    event_fields: int = 32
    text_chars: int = 1023

    def field_name_ok(self, name: str) -> bool:
        """True if ``name`` is a storable event field name."""
        return len(name) <= self.field_name_chars and _FIELD_NAME.fullmatch(name) is not None


_FIELD_NAME = re.compile(f"[{FIELD_NAME_CHARACTERS}]+")
DEFAULT_LIMITS = InputLimits()

_VARIABLES = {
    "payload_bytes": "F2_LIMIT_PAYLOAD_BYTES",
    "topic_bytes": "F2_LIMIT_TOPIC_BYTES",
    "field_name_chars": "F2_LIMIT_FIELD_NAME_CHARS",
    "event_fields": "F2_LIMIT_EVENT_FIELDS",
    "text_chars": "F2_LIMIT_TEXT_CHARS",
}


def load_input_limits(environ: Mapping[str, str] | None = None) -> InputLimits:
    """:class:`InputLimits` from ``F2_LIMIT_*`` variables (each a positive integer)."""
    env = os.environ if environ is None else environ
    values = {}
    for field, variable in _VARIABLES.items():
        if variable in env:
            value = int(env[variable])
            if value <= 0:
                raise ValueError(f"{variable} must be a positive integer, not {value}")
            values[field] = value
    return InputLimits(**values)
