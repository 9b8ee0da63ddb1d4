"""The records' database as a server's weak point: PostgreSQL stopped under
a running server answers 503 with Retry-After and keeps nothing partial, and
uploads go on when it is back; records of a newer release are refused at
start with a message saying what to do, on either adapter."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest

from ..postgres import PostgreSQL
from ..support import Phone, ServerProcess


@pytest.fixture
def database(tmp_path):
    cluster = PostgreSQL(tmp_path / "postgresql").start()
    yield cluster
    cluster.remove()


def test_postgresql_down_is_503_with_retry_after_and_nothing_partial(tmp_path, database):
    server = ServerProcess(tmp_path / "server", WITNESS_DATABASE_URL=database.new_database()).start()
    try:
        recording = Phone(server).create_recording()
        assert recording.put(0, recording.chunk(0)).status_code == 201
        database.stop("immediate")
        refused = recording.put(1, recording.chunk(1))
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"] == "server_busy" and refused.headers["Retry-After"].isdigit()
        database.start()
        # Back: the refused chunk was not kept (nothing acknowledged, nothing
        # partial), and the phone's retry is taken.
        status = server.wait_for(lambda: (lambda a: a.status_code == 200 and a.json())(recording.status()))
        assert status["received"] == [[0, 0]]
        assert server.query("SELECT idx FROM chunks WHERE recording_id = ?", [recording.id]) == [{"idx": 0}]
        assert server.wait_for(lambda: recording.put(1, recording.chunk(1)).status_code == 201)
        assert recording.status().json()["received"] == [[0, 1]]
    finally:
        server.stop()


@pytest.mark.parametrize("adapter", ["sqlite", "postgresql"])
def test_records_of_a_newer_release_are_refused_at_start(tmp_path, adapter, request):
    env = {} if adapter == "sqlite" else {"WITNESS_DATABASE_URL": request.getfixturevalue("database").new_database()}
    server = ServerProcess(tmp_path / "server", **env)
    assert server.cli("organisations").returncode == 0  # made at the current version
    server.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    refused = server.cli("organisations")
    assert refused.returncode != 0
    assert "schema version 999" in refused.stderr and "Upgrade this server" in refused.stderr, refused.stderr
    with pytest.raises(RuntimeError, match="schema version 999"):
        server.start()
    server.stop()
    assert stored_schema_version(server) == "999"  # left as it was


def stored_schema_version(server: ServerProcess) -> str:
    # Read around the adapters, which would refuse to open these records.
    sql = "SELECT value FROM meta WHERE key = 'schema_version'"
    if server.database_url is None:
        with sqlite3.connect(server.data_dir / "witness.sqlite3") as db:
            return db.execute(sql).fetchone()[0]
    with psycopg.connect(server.database_url) as db:
        return db.execute(sql).fetchone()[0]
