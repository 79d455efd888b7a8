"""Keyed hashing of reader data and the privacy settings (schemas.privacy)."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.privacy import hash_card_id
from schemas.settings import PrivacySettings, SettingsError, StoreSettings, load_section

KEY = b"0123456789abcdef0123456789abcdef"


def test_hash_is_hmac_sha256_hex() -> None:
    expected = hmac.new(KEY, b"A1B2C3D4", hashlib.sha256).hexdigest()
    assert hash_card_id("A1B2C3D4", KEY) == expected
    # RFC 4231 test case 2 pins the algorithm itself.
    assert hash_card_id("what do ya want for nothing?", b"Jefe") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


@given(st.text(max_size=200), st.text(max_size=200))
def test_hash_is_stable_keyed_and_never_the_value(first: str, second: str) -> None:
    digest = hash_card_id(first, KEY)
    assert digest == hash_card_id(first, KEY)
    assert len(digest) == 64 and digest != first
    assert (digest == hash_card_id(second, KEY)) == (first == second)
    assert digest != hash_card_id(first, KEY[::-1])


def test_lone_surrogates_hash_without_error() -> None:
    assert len(hash_card_id("\ud800", KEY)) == 64


def test_key_from_file_and_retention(tmp_path) -> None:
    key_file = tmp_path / "reader-hash-key"
    key_file.write_text("k" * 32 + "\n")
    environ = {"F2_READER_HASH_KEY_FILE": str(key_file), "F2_EVENT_RETENTION_DAYS": "30"}
    assert load_section(PrivacySettings, environ).key == b"k" * 32
    assert load_section(StoreSettings, environ).event_retention_days == 30


def test_defaults_keep_values_and_a_year_of_events() -> None:
    assert load_section(PrivacySettings, {}).key is None
    assert load_section(StoreSettings, {}).event_retention_days == 365


@pytest.mark.parametrize(
    ("section", "environ"),
    [
        (PrivacySettings, {"F2_READER_HASH_KEY": "short"}),
        (StoreSettings, {"F2_EVENT_RETENTION_DAYS": "-1"}),
    ],
)
def test_bad_settings_are_refused(section: type, environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=next(iter(environ))):
        load_section(section, environ)
