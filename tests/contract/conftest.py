"""Fixtures for the contract suites: each port's suite runs against every
adapter (DESIGN.md, "Storage")."""

from __future__ import annotations

import pytest

from ..postgres import PostgreSQL
from .spec import open_records


@pytest.fixture(scope="session")
def postgresql(tmp_path_factory):
    """One PostgreSQL cluster for the session (a fresh database per test)."""
    cluster = PostgreSQL(tmp_path_factory.mktemp("postgresql")).start()
    yield cluster
    cluster.remove()


@pytest.fixture
def own_postgresql(tmp_path):
    """A cluster of the test's own, for tests that stop or crash it."""
    cluster = PostgreSQL(tmp_path / "own-postgresql").start()
    yield cluster
    cluster.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def spec(request, tmp_path) -> tuple[str, str]:
    """(adapter, where): a SQLite file's path or a fresh PostgreSQL database's URL."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "witness.sqlite3")
    return "postgresql", request.getfixturevalue("postgresql").new_database()


@pytest.fixture
def records(spec):
    opened = open_records(spec)
    yield opened
    opened.close()
