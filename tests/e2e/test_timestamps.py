"""Every manifest version is time-stamped by the server's built-in RFC 3161
authority, and `openssl ts` alone verifies it with the chain from /v1/keys."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

from crypto.tsa import token_time
from tests.support import Phone, Staff, openssl_ts_verify


def test_every_manifest_version_has_a_token_openssl_verifies(server, tmp_path):
    lawyer = Staff(server, "tsa-lawyer", "lawyer")
    chain = requests.get(server.url + "/v1/keys").json()["tsa"]["certificate_chain_pem"]
    assert chain.count("BEGIN CERTIFICATE") == 2
    phone = Phone(server)
    recording = phone.create_recording()
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    recording.put(0, recording.chunk(0))
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 1)  # idle: interrupted
    recording.put(1, recording.chunk(1))  # a late chunk: version 2
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 2)
    after = datetime.now(timezone.utc) + timedelta(seconds=1)

    base = f"{server.url}/v1/recordings/{recording.id}"
    for version in (1, 2):
        manifest = requests.get(base + "/manifest", params={"version": version}, headers=lawyer.auth).content
        token = requests.get(base + "/manifest.tsr", params={"version": version}, headers=lawyer.auth).content
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        result = openssl_ts_verify(folder, manifest, token, chain)
        assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stdout + result.stderr
        assert before <= token_time(token) <= after
        altered = openssl_ts_verify(folder, manifest.replace(b'"version":', b'"version": '), token, chain)
        assert altered.returncode != 0 and "message imprint mismatch" in altered.stdout + altered.stderr
