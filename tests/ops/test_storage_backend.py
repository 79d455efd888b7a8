"""Which migration files belong to which storage backend, and the TimescaleDB settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.storage.backend import (
    PLAIN,
    TIMESCALE,
    file_backend,
)
from schemas.settings import SettingsError, TimescaleSettings, load_section


def test_file_suffix_names_the_backend() -> None:
    assert file_backend(Path("002_facts_plain.sql")) == PLAIN
    assert file_backend(Path("002_facts_timescale.sql")) == TIMESCALE
    assert file_backend(Path("003_named_views.sql")) is None
    assert file_backend(Path("004_plain_views.sql")) is None


def test_settings_defaults_and_overrides() -> None:
    assert load_section(TimescaleSettings, {}) == TimescaleSettings()
    settings = load_section(
        TimescaleSettings,
        {
            "F2_STORAGE_BACKEND": "postgres",
            "F2_TSDB_COMPRESS_AFTER": "6 hours",
            "F2_TSDB_RETENTION": "",
        },
    )
    assert settings.backend == PLAIN
    assert settings.compress_after == "6 hours"
    assert settings.retention == TimescaleSettings().retention  # empty means unset


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(SettingsError, match="F2_STORAGE_BACKEND='influx'"):
        load_section(TimescaleSettings, {"F2_STORAGE_BACKEND": "influx"})
