"""The package map of docs/ARCHITECTURE.md, enforced: who may import whom, and who may read the
environment.

Import direction: ``schemas`` ← ``connectors`` ← ``dataflows``; ``simulator`` uses ``schemas``
only; ``ops`` and ``bench`` on top; ``tools`` (development tooling, not shipped) on top of them;
nothing imports ``tests``. Settings are read once, at an entry point: only the settings module
and the entry points below touch ``os.environ`` / ``os.getenv``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("schemas", "connectors", "dataflows", "simulator", "ops", "bench", "tools")
MAY_IMPORT = {
    "schemas": {"schemas"},
    "connectors": {"schemas", "connectors"},
    "dataflows": {"schemas", "connectors", "dataflows"},
    "simulator": {"schemas", "simulator"},
    "ops": {"schemas", "connectors", "dataflows", "simulator", "ops"},
    "bench": {"schemas", "connectors", "dataflows", "simulator", "ops", "bench", "tools"},
    "tools": {"schemas", "connectors", "dataflows", "simulator", "ops", "bench", "tools"},
}
ENVIRONMENT_READERS = {
    "schemas/settings.py": "the settings module",
    "dataflows/entry.py": "the flows' entry point (Bytewax's API server variables)",
    "bench/common.py": "the benchmark harness (points itself and its children at a stack)",
}
ENVIRONMENT_READING_FOLDERS = ("tools/",)  # development tools, each its own entry point


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def imported(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(path: Path) -> list[str]:
    relative = path.relative_to(ROOT).as_posix()
    package = relative.split("/")[0]
    tree = ast.parse(path.read_text())
    found = []
    for name in imported(tree):
        top = name.split(".")[0]
        if top == "tests" or (top in MAY_IMPORT and top not in MAY_IMPORT[package]):
            found.append(f"{relative} imports {name}")
    return found


def environment_reads(path: Path) -> list[str]:
    """``os.environ``, ``os.getenv`` and ``from os import environ/getenv`` in ``path``."""
    tree = ast.parse(path.read_text())
    relative = path.relative_to(ROOT).as_posix()
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and node.attr in ("environ", "getenv", "environb", "putenv")
        ):
            found.append(f"{relative}:{node.lineno} os.{node.attr}")
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in ("environ", "getenv", "environb"):
                    found.append(f"{relative}:{node.lineno} from os import {alias.name}")
    return found


def test_imports_follow_the_package_map() -> None:
    found = [v for path in modules() for v in violations(path)]
    assert found == []


def test_only_the_settings_module_and_entry_points_read_the_environment() -> None:
    found = [
        read
        for path in modules()
        for read in environment_reads(path)
        if path.relative_to(ROOT).as_posix() not in ENVIRONMENT_READERS
        and not path.relative_to(ROOT).as_posix().startswith(ENVIRONMENT_READING_FOLDERS)
    ]
    assert found == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import os\nx = os.environ['A']", ["m.py:2 os.environ"]),
        ("import os\nx = os.getenv('A')", ["m.py:2 os.getenv"]),
        ("from os import environ", ["m.py:1 from os import environ"]),
        ("import os\nx = os.path.join('a')", []),
    ],
)
def test_the_environment_check_sees_every_form(tmp_path, source: str, expected: list[str]) -> None:
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        (tmp_path / "m.py").write_text(source)
        assert environment_reads(tmp_path / "m.py") == expected
    finally:
        ROOT = saved


def test_the_import_check_refuses_an_upward_import(tmp_path) -> None:
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        (tmp_path / "schemas").mkdir()
        (tmp_path / "schemas" / "x.py").write_text("from connectors import y\nimport tests.z\n")
        assert sorted(violations(tmp_path / "schemas" / "x.py")) == [
            "schemas/x.py imports connectors",
            "schemas/x.py imports tests.z",
        ]
    finally:
        ROOT = saved
