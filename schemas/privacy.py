"""Reader data (card ids, QR codes) are credentials: store a keyed hash instead of the value.

:func:`hash_card_id` is HMAC-SHA256 of the text under a secret key, as lowercase hex: equal card
ids give equal hashes (so "which card opened this door, and where else was it used" still works),
but the value cannot be read back or brute-forced without the key. :func:`load_privacy_settings`
reads the key from ``F2_READER_HASH_KEY`` or, better, the file named by
``F2_READER_HASH_KEY_FILE`` (``make secure-setup`` writes one: ``<secrets>/reader-hash-key``), and
the event retention from ``F2_EVENT_RETENTION_DAYS``.

Variables:

- ``F2_READER_HASH_KEY_FILE`` (unset): file holding the HMAC key (its text, stripped, as UTF-8,
  at least 16 bytes). When set, reader values are stored as their hash.
- ``F2_READER_HASH_KEY`` (unset): the key itself; prefer the ``_FILE`` form.
- ``F2_EVENT_RETENTION_DAYS`` (365): events older than this are removed by the storage's
  retention; 0 keeps them forever.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

import msgspec

from schemas.settings import env_value

MIN_KEY_BYTES = 16
DEFAULT_EVENT_RETENTION_DAYS = 365


class PrivacySettings(msgspec.Struct, frozen=True):
    """Whether and how reader values are hashed, and how long events are kept."""

    reader_hash_key: bytes | None = None
    event_retention_days: int = DEFAULT_EVENT_RETENTION_DAYS

    @property
    def hash_readers(self) -> bool:
        return self.reader_hash_key is not None


def hash_card_id(value: str, key: bytes) -> str:
    """HMAC-SHA256 of ``value`` (UTF-8) under ``key``, as 64 lowercase hex digits."""
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def load_privacy_settings(environ: Mapping[str, str] | None = None) -> PrivacySettings:
    """The privacy settings from the environment; ``ValueError`` for a short key or bad number."""
    env = os.environ if environ is None else environ
    key_text = env_value(env, "F2_READER_HASH_KEY", "")
    key = key_text.encode("utf-8") if key_text else None
    if key is not None and len(key) < MIN_KEY_BYTES:
        raise ValueError(f"F2_READER_HASH_KEY must be at least {MIN_KEY_BYTES} bytes")
    days = int(env_value(env, "F2_EVENT_RETENTION_DAYS", str(DEFAULT_EVENT_RETENTION_DAYS)))
    if days < 0:
        raise ValueError("F2_EVENT_RETENTION_DAYS must be 0 (keep forever) or more")
    return PrivacySettings(reader_hash_key=key, event_retention_days=days)
