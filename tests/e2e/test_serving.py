"""PROTOCOL.md's "Operating the server": `gunicorn wsgi:app` and `flask
--app wsgi run` both serve the app and run its background work, without the
front door (which is what scripts/serve adds in front)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests

from tests.support import PROJECT_ROOT, Phone, ServerProcess

pytestmark = pytest.mark.slow


def _serve_and_finalize(server: ServerProcess, command: list[str]) -> None:
    server.root.mkdir(parents=True, exist_ok=True)
    log = open(server.log_path, "ab")
    server.process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=server.env, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        server.wait_for(lambda: _answers(server.url + "/v1/keys"))
        phone = Phone(server)
        recording = phone.create_recording()
        assert recording.put(0, recording.chunk(0)).status_code == 201
        token = server.staff_token("serving-observer", "observer")
        # The idle finalizer ran inside this one process: no second one to start.
        server.wait_for(lambda: recording.status(token=token).json()["manifest_version"] == 1)
        assert recording.status(token=token).json()["state"] == "interrupted"
    finally:
        server.stop()


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def test_flask_run_serves_the_app_and_runs_its_background_jobs(tmp_path):
    server = ServerProcess(tmp_path / "server", idle_seconds=1, front_door=False)
    _serve_and_finalize(server, [sys.executable, "-m", "flask", "--app", "wsgi", "run", "--port", str(server.port)])


def test_gunicorn_wsgi_app_with_its_config_file_serves_on_witness_bind(tmp_path):
    server = ServerProcess(tmp_path / "server", idle_seconds=1, front_door=False)
    server.env["WITNESS_BIND"] = f"127.0.0.1:{server.port}"
    _serve_and_finalize(server, [sys.executable, "-m", "gunicorn", "wsgi:app"])
