"""Input limits: what one device message may hold (the settings struct is
:class:`schemas.settings.InputLimits`).

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

import re

from schemas.settings import InputLimits

FIELD_NAME_CHARACTERS = "A-Za-z0-9_.-"
_FIELD_NAME = re.compile(f"[{FIELD_NAME_CHARACTERS}]+")
DEFAULT_LIMITS = InputLimits()


def field_name_ok(name: str, limits: InputLimits) -> bool:
    """True if ``name`` is a storable event field name under ``limits``."""
    return len(name) <= limits.field_name_chars and _FIELD_NAME.fullmatch(name) is not None
