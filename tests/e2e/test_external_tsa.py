"""An external RFC 3161 TSA (`WITNESS_TSA_URL`): a real `openssl ts -reply`
behind HTTP, asked by a real server after each manifest is committed. Its
token is served beside the built-in one and verifies with `openssl ts` and
the operator's CA file alone."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from crypto.tsa import verify_time_stamp
from tests.openssl_tsa import OpensslTsa, TsaHttpServer
from tests.support import Phone, ServerProcess, Staff, openssl_ts_verify

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tsa(tmp_path_factory):
    server = TsaHttpServer(OpensslTsa(tmp_path_factory.mktemp("external-tsa"), key_type="rsa")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stamped_server(tmp_path_factory, tsa):
    process = ServerProcess(tmp_path_factory.mktemp("server-with-tsa"), WITNESS_TSA_URL=tsa.url,
                            WITNESS_TSA_CA_FILE=tsa.tsa.ca_file).start()
    yield process
    process.stop()


def finished_recording(server: ServerProcess):
    recording = Phone(server).create_recording()
    answer = recording.put(0, recording.chunk(0, b"the whole encounter", final=True), final=True)
    assert answer.status_code == 201, answer.text
    server.wait_for(lambda: recording.status().json()["manifest_version"] == 1)
    return recording


def token(server: ServerProcess, staff: Staff, recording_id: str, **params) -> requests.Response:
    return requests.get(f"{server.url}/v1/recordings/{recording_id}/manifest.tsr", params=params,
                        headers=staff.auth)


def test_every_manifest_gets_both_tokens_and_openssl_verifies_the_external_one(stamped_server, tsa, tmp_path):
    server = stamped_server
    lawyer = Staff(server, "ext-lawyer", "lawyer")
    custodian = Staff(server, "ext-custodian", "custodian")
    recording = finished_recording(server)
    manifest = requests.get(f"{server.url}/v1/recordings/{recording.id}/manifest", headers=lawyer.auth).content

    external = server.wait_for(lambda: (answer := token(server, lawyer, recording.id, tsa="external"))
                               .status_code == 200 and answer)
    assert external.headers["Content-Type"] == "application/timestamp-reply"
    assert external.headers["Witness-Manifest-Version"] == "1"
    (tmp_path / "external").mkdir()
    result = openssl_ts_verify(tmp_path / "external", manifest, external.content, tsa.tsa.ca_file.read_text())
    assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stdout + result.stderr
    facts = verify_time_stamp(external.content, hashlib.sha256(manifest).digest(), tsa.tsa.ca_file.read_bytes())
    assert facts.tsa_name == "CN=Test TSA authority,O=Test TSA"

    built_in = token(server, lawyer, recording.id)
    assert built_in.status_code == 200 and built_in.content != external.content
    assert token(server, lawyer, recording.id, tsa="builtin").content == built_in.content
    chain = requests.get(server.url + "/v1/keys").json()["tsa"]["certificate_chain_pem"]
    (tmp_path / "builtin").mkdir()
    result = openssl_ts_verify(tmp_path / "builtin", manifest, built_in.content, chain)
    assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stdout + result.stderr
    # Neither chain vouches for the other authority's token.
    (tmp_path / "crossed").mkdir()
    assert openssl_ts_verify(tmp_path / "crossed", manifest, external.content, chain).returncode != 0

    bad = token(server, lawyer, recording.id, tsa="somewhere-else")
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_tsa"

    log = requests.get(f"{server.url}/v1/audit", params={"recording_id": recording.id}, headers=custodian.auth)
    actions = [entry["action"] for entry in reversed(log.json()["entries"])]
    assert actions.index("recording.finalized") < actions.index("manifest.time_stamped_externally")
    [stamped] = [entry for entry in log.json()["entries"] if entry["action"] == "manifest.time_stamped_externally"]
    assert stamped["detail"]["token_sha256"] == hashlib.sha256(external.content).hexdigest()
    downloads = [entry["detail"]["part"] for entry in log.json()["entries"] if entry["action"] == "manifest.downloaded"]
    assert "external_timestamp" in downloads and "timestamp" in downloads


def test_with_the_tsa_down_the_manifest_is_made_and_its_external_token_comes_later(stamped_server, tsa, tmp_path):
    server = stamped_server
    observer = Staff(server, "ext-observer", "observer")
    tsa.stop()
    try:
        recording = finished_recording(server)  # finalization does not wait for the TSA
        time.sleep(1.5)  # the server has tried and failed by now
        waiting = token(server, observer, recording.id, tsa="external")
        assert waiting.status_code == 404 and waiting.json()["error"] == "not_ready", waiting.text
        assert "external time-stamping authority" in waiting.json()["message"]
        assert token(server, observer, recording.id).status_code == 200  # the built-in one is there
    finally:
        tsa.start()
    external = server.wait_for(lambda: (answer := token(server, observer, recording.id, tsa="external"))
                               .status_code == 200 and answer, timeout=60)
    manifest = requests.get(f"{server.url}/v1/recordings/{recording.id}/manifest", headers=observer.auth).content
    result = openssl_ts_verify(tmp_path, manifest, external.content, tsa.tsa.ca_file.read_text())
    assert result.returncode == 0 and "Verification: OK" in result.stdout, result.stdout + result.stderr
    assert "unavailable" in server.log()  # the failure was logged, not raised


def test_without_an_external_tsa_there_is_no_external_token(server):
    lawyer = Staff(server, "no-ext-lawyer", "lawyer")
    recording = finished_recording(server)
    answer = token(server, lawyer, recording.id, tsa="external")
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
    assert "WITNESS_TSA_URL" in answer.json()["message"]


def test_a_copy_bundle_carries_the_external_token_and_its_chain(stamped_server, tmp_path):
    server = stamped_server
    lawyer = Staff(server, "ext-copy-lawyer", "lawyer")
    custodian = Staff(server, "ext-copy-custodian", "custodian")
    recording = finished_recording(server)
    server.wait_for(lambda: token(server, lawyer, recording.id, tsa="external").status_code == 200)
    asked = requests.post(f"{server.url}/v1/recordings/{recording.id}/copy-requests", headers=lawyer.auth,
                          json={"case_reference": "External TSA case", "purpose": "Trial"})
    assert asked.status_code == 201, asked.text
    request_id = asked.json()["request_id"]
    assert requests.post(f"{server.url}/v1/copy-requests/{request_id}/approve",
                         headers=custodian.auth).status_code == 200
    server.wait_for(lambda: requests.get(f"{server.url}/v1/copy-requests/{request_id}",
                                         headers=lawyer.auth).json()["state"] == "ready")
    bundle = tmp_path / "bundle.zip"
    bundle.write_bytes(requests.get(f"{server.url}/v1/copy-requests/{request_id}/bundle", headers=lawyer.auth).content)

    verified = subprocess.run([str(Path(sys.executable).with_name("witness-verify")), str(bundle)],
                              capture_output=True, text=True, timeout=60)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "also by CN=Test TSA authority,O=Test TSA" in verified.stdout

    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path / "unzipped")
    (folder,) = (tmp_path / "unzipped").iterdir()
    assert (folder / "manifests" / "v1" / "manifest.external.tsr").is_file()
    assert (folder / "external-tsa-chain.pem").is_file()
    commands = [line for block in re.findall(r"```\n(.*?)```", (folder / "VERIFY.md").read_text(), re.S)
                for line in block.splitlines() if line.startswith("openssl ts -verify")]
    assert any("manifest.external.tsr" in command for command in commands)
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=folder, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0 and "Verification: OK" in done.stdout, command + done.stdout + done.stderr
