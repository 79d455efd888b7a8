"""No SQL built by string formatting anywhere: every query text is a constant or psycopg.sql.

Scans the repository's Python for calls to ``execute``/``executemany``/``copy``/``stream`` (and
``psycopg.sql.SQL``) whose query is an f-string with placeholders, ``%``-formatting,
concatenation or ``str.format`` — directly, or through a variable assigned such an expression in
the same scope. ``sql.SQL("...").format(sql.Identifier(...))`` composition is allowed.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "connectors", "dataflows", "simulator", "ops", "bench", "tests")
QUERY_METHODS = {"execute", "executemany", "copy", "stream"}
# Violations that may stay (none: keep it that way).
KNOWN_VIOLATIONS: set[str] = set()


def _is_sql_composition(node: ast.AST) -> bool:
    """``sql.SQL(...)``/``SQL(...)`` and ``.format``/``.join`` on it: psycopg's safe composition."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr not in ("format", "join"):
            break
        node = node.func.value
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in ("SQL", "Composed", "Identifier", "Literal")
    return False


def _formatted(node: ast.AST) -> bool:
    """True if ``node`` builds text by formatting or concatenation."""
    if _is_sql_composition(node):
        return False
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.FormattedValue) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return True
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        return node.func.attr in ("format", "join", "replace")
    return False


def _assignments(scope: ast.AST) -> dict[str, list[ast.AST]]:
    found: dict[str, list[ast.AST]] = {}
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, []).append(node.value)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            found.setdefault(node.target.id, []).append(node)
    return found


def violations(source: str, filename: str = "<source>") -> list[str]:
    """``file: query expression`` of each query built by formatting."""
    tree = ast.parse(source, filename)
    assigned = _assignments(tree)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in QUERY_METHODS and name != "SQL":
            continue
        query = node.args[0]
        suspects = [query]
        if isinstance(query, ast.Name):
            suspects += assigned.get(query.id, [])
        if any(isinstance(s, ast.AugAssign) or _formatted(s) for s in suspects):
            problems.append(f"{filename}: {ast.unparse(query)}")
    return problems


def python_files() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def test_scanner_catches_each_kind_of_formatting() -> None:
    bad = [
        'cur.execute(f"SELECT * FROM t WHERE id = {x}")',
        'cur.execute("SELECT * FROM t WHERE id = %s" % x)',
        'cur.execute("SELECT * FROM t WHERE id = " + x)',
        'cur.execute("SELECT * FROM {}".format(t))',
        'q = f"DELETE FROM {t}"\nconn.execute(q)',
        'q = "SELECT 1"\nq += x\nconn.execute(q)',
        'conn.execute(sql.SQL(f"SELECT {x}"))',
        'cur.copy("COPY %s FROM STDIN" % t)',
    ]
    for snippet in bad:
        assert violations(snippet), snippet
    good = [
        'cur.execute("SELECT * FROM t WHERE id = %s", (x,))',
        'conn.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))',
        'Q = "SELECT 1"\nconn.execute(Q, params)',
        'conn.execute(sql.SQL(", ").join([sql.Identifier(a)]))',
    ]
    for snippet in good:
        assert not violations(snippet), snippet


def test_no_sql_built_by_string_formatting_anywhere() -> None:
    files = python_files()
    assert len(files) > 20
    found = [v for path in files for v in violations(path.read_text(), str(path.relative_to(ROOT)))]
    new = sorted(set(found) - KNOWN_VIOLATIONS)
    assert new == [], "queries built by string formatting (use parameters or psycopg.sql)"
