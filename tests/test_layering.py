"""Imports flow one way: server -> sync -> crypto (DESIGN.md, "Rooms")."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "crypto": {"server", "sync", "flask", "flask_jwt_extended", "sqlite_utils", "sqlite3", "requests"},
    "sync": {"server", "flask", "flask_jwt_extended", "werkzeug"},
    "server": {"sqlite_utils", "sqlite3", "cryptography"},
}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("room", sorted(FORBIDDEN))
def test_room_imports_only_what_it_may(room):
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted((ROOT / room).rglob("*.py"))
        for module in imported_modules(path)
        if module in FORBIDDEN[room]
    ]
    assert offenders == []


def test_the_checker_sees_a_bad_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from flask import Flask\nimport sqlite_utils\n")
    assert set(imported_modules(bad)) == {"flask", "sqlite_utils"}
