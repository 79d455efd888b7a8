"""Reader data (card ids, QR codes) are credentials: store a keyed hash instead of the value.

:func:`hash_card_id` is HMAC-SHA256 of the text under a secret key, as lowercase hex: equal card
ids give equal hashes (so "which card opened this door, and where else was it used" still works),
but the value cannot be read back or brute-forced without the key. The key is
:class:`schemas.settings.PrivacySettings` (``F2_READER_HASH_KEY``, better its ``_FILE`` form;
``make secure-setup`` writes one: ``<secrets>/reader-hash-key``).
"""

from __future__ import annotations

import hashlib
import hmac


def hash_card_id(value: str, key: bytes) -> str:
    """HMAC-SHA256 of ``value`` (UTF-8) under ``key``, as 64 lowercase hex digits."""
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
