"""Imports flow one way: server -> sync -> crypto (DESIGN.md, "Rooms")."""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "crypto": {"server", "sync", "flask", "flask_jwt_extended", "sqlite_utils", "sqlite3", "requests"},
    "sync": {"server", "flask", "flask_jwt_extended", "werkzeug"},
    "server": {"sqlite_utils", "sqlite3", "cryptography"},
}
# The evidence formats and witness-verify (sync/evidence/) run on the other
# side's expert's machine: crypto, its two libraries and the standard
# library, less the database and what exists on POSIX systems only.
EVIDENCE = ROOT / "sync" / "evidence"
EVIDENCE_MAY_IMPORT = {"__future__", "crypto", "cryptography", "asn1crypto"}
NOT_FOR_EVIDENCE = {"sqlite3", "fcntl", "grp", "pwd", "resource", "termios", "posix"}


def imported_modules(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def evidence_offences(path: Path):
    """What a module of sync/evidence/ imports that it may not."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level > 1:  # above sync.evidence: the domain
                yield f"{'.' * node.level}{node.module or ''}"
            continue
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) else [])
        for name in names:
            top = name.split(".")[0]
            if name == "sync.evidence" or name.startswith("sync.evidence."):
                continue
            if top in EVIDENCE_MAY_IMPORT or (top in sys.stdlib_module_names and top not in NOT_FOR_EVIDENCE):
                continue
            yield name


def test_the_evidence_formats_import_only_crypto_and_the_standard_library():
    offenders = [f"{path.relative_to(ROOT)} imports {name}"
                 for path in sorted(EVIDENCE.rglob("*.py")) for name in evidence_offences(path)]
    assert offenders == []


def test_the_evidence_checker_sees_a_bad_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nfrom . import layout\nfrom .. import audit\nimport sqlite3\nimport sync.archive\n"
                   "from crypto.hashing import canonical_json\nimport sqlite_utils\nimport sync.evidence.custody\n")
    assert list(evidence_offences(bad)) == ["..", "sqlite3", "sync.archive", "sqlite_utils"]


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
