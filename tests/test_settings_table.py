"""The README's configuration table is generated from the settings structs (tools/settings_table.py)
and must match them; every setting has a description."""

from __future__ import annotations

from pathlib import Path

from schemas.settings import SECTIONS, variables
from tools.settings_table import BEGIN, END, rendered, tables

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_table_is_generated_from_the_structs() -> None:
    text = README.read_text()
    assert BEGIN in text and END in text
    assert rendered(text) == text, "README.md is stale: run python -m tools.settings_table"


def test_every_setting_is_described_once() -> None:
    names = [v.env for cls in SECTIONS for v in variables(cls)]
    assert len(names) == len(set(names)) > 90
    assert all(v.description for cls in SECTIONS for v in variables(cls))
    assert all(f"`{name}`" in tables() for name in names)
