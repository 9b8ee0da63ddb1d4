"""The OpenAPI document against the real server.

The document is only worth something if it says what the server does. These
tests fetch it from a running gunicorn server, compare its operations with the
app's URL rules in both directions, and then drive real flows over HTTP. Every
answer the server gives while a test runs (those sent by `tests.support`
helpers included) is checked against the document: the status must be one it
lists for that operation, a JSON body must validate against the schema it
gives for that status, and documented required headers must be present.
Each flow also names the (operation, status) answers it must have met
(`FLOWS`), and together the flows cover every operation of the document.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import re
import time
import uuid
import zipfile
from urllib.parse import urlsplit

import jwt as pyjwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi_document
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from crypto.signing import public_key_pem, sign_chunk
from crypto.totp import current_code
from tests.support import Phone, Recording, ServerProcess, Staff, b64url, content_digest

DOCUMENT_URI = "urn:witness:openapi.json"
IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
MIB = 1024 * 1024  # the `server` fixture's WITNESS_MAX_CHUNK_BYTES
OPERATOR_PATHS = {"/healthz", "/readyz", "/metrics"}  # outside /v1/, documented too
METRICS_TOKEN = "openapi-metrics-token-0123456789"


def _pointer(*parts: str) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in parts)


class Conformance:
    """Checks real answers against one OpenAPI document and remembers which
    (method, path template, status) it saw."""

    def __init__(self, document: dict, base_url: str):
        self.document = document
        self.base_url = base_url.rstrip("/")
        self.registry = Registry().with_resource(DOCUMENT_URI, DRAFT202012.create_resource(document))
        self.operations = []
        for template, item in document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$")
            for method, operation in item.items():
                if method in HTTP_METHODS:
                    self.operations.append((method.upper(), template, pattern, operation))
        self.seen: set[tuple[str, str, int]] = set()

    def resolve(self, node: dict, pointer: str) -> tuple[dict, str]:
        """Follow a local `$ref` (responses, headers, parameters)."""
        while "$ref" in node:
            pointer = node["$ref"].removeprefix("#")
            node = self.document
            for part in pointer.split("/")[1:]:
                node = node[part.replace("~1", "/").replace("~0", "~")]
        return node, pointer

    def operation(self, method: str, path: str) -> tuple[str, dict]:
        matches = [(template, op) for m, template, pattern, op in self.operations
                   if m == method and pattern.match(path)]
        assert len(matches) == 1, f"{method} {path} matches {len(matches)} documented operations"
        return matches[0]

    def schema_errors(self, instance, pointer: str) -> list[str]:
        validator = Draft202012Validator({"$ref": DOCUMENT_URI + "#" + pointer}, registry=self.registry)
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(instance)]

    def check(self, response: requests.Response) -> requests.Response:
        method = response.request.method
        path = urlsplit(response.request.url).path
        template, operation = self.operation(method, path)
        status = str(response.status_code)
        where = f"{method} {template} -> {status}"
        assert status in operation["responses"], (
            f"{where}: status not documented for this operation; body: {response.text[:300]}")
        answer, pointer = self.resolve(operation["responses"][status],
                                       _pointer("paths", template, method.lower(), "responses", status))
        content = answer.get("content", {})
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media_type == "application/json":
            assert "application/json" in content, f"{where}: JSON answer, but no JSON is documented"
            body = response.json()
            errors = self.schema_errors(body, pointer + _pointer("content", "application/json", "schema"))
            assert not errors, f"{where}: body does not match the document:\n" + "\n".join(errors) + \
                f"\nbody: {json.dumps(body)[:1000]}"
        elif content:
            assert any(_media_matches(media_type, documented) for documented in content), (
                f"{where}: Content-Type {media_type!r} is not one of {sorted(content)}")
        else:
            assert not response.content, f"{where}: a body the document does not describe"
        for name, header in answer.get("headers", {}).items():
            header, _ = self.resolve(header, "")
            if header.get("required"):
                assert name in response.headers, f"{where}: documented header {name} missing"
        self.seen.add((method, template, response.status_code))
        return response

    def documented_operations(self) -> set[tuple[str, str]]:
        return {(method, template) for method, template, _, _ in self.operations}

    def seen_operations(self) -> set[tuple[str, int]]:
        """(operationId, status) of every answer checked so far."""
        ids = {(method, template): op["operationId"] for method, template, _, op in self.operations}
        return {(ids[(method, template)], status) for method, template, status in self.seen}


def _media_matches(actual: str, documented: str) -> bool:
    kind, _, sub = documented.partition("/")
    actual_kind, _, actual_sub = actual.partition("/")
    return (kind in ("*", actual_kind)) and (sub in ("*", actual_sub))


@pytest.fixture(scope="module")
def document(server) -> dict:
    answer = requests.get(server.url + "/v1/openapi.json")
    assert answer.status_code == 200
    return answer.json()


def _check_every_answer(checker: Conformance, monkeypatch) -> Conformance:
    original_send = requests.Session.send

    def send(session, prepared, **kwargs):
        response = original_send(session, prepared, **kwargs)
        if prepared.url.startswith(checker.base_url + "/"):
            checker.check(response)
        return response

    monkeypatch.setattr(requests.Session, "send", send)
    return checker


@pytest.fixture
def conformance(server, document, monkeypatch) -> Conformance:
    """Every answer from `server` during the test is checked, including
    answers to requests that `tests.support` helpers make themselves."""
    return _check_every_answer(Conformance(document, server.url), monkeypatch)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory):
    """A server whose operator requires custodians to have a second factor."""
    process = ServerProcess(tmp_path_factory.mktemp("strict-server"), workers=1,
                            WITNESS_REQUIRE_CUSTODIAN_TOTP="true").start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory):
    """A server whose operator configured a metrics token."""
    process = ServerProcess(tmp_path_factory.mktemp("metrics-server"), workers=1,
                            WITNESS_METRICS_TOKEN=METRICS_TOKEN).start()
    yield process
    process.stop()


@pytest.fixture
def metrics_conformance(metrics_server, document, monkeypatch) -> Conformance:
    """As `conformance`, for `metrics_server` (it serves the same document)."""
    return _check_every_answer(Conformance(document, metrics_server.url), monkeypatch)


@pytest.fixture
def strict_conformance(strict_server, document, monkeypatch) -> Conformance:
    """As `conformance`, for `strict_server` (it serves the same document)."""
    return _check_every_answer(Conformance(document, strict_server.url), monkeypatch)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def error_of(response: requests.Response) -> str:
    return response.json()["error"]


def forged_token(server, subject: str, role: str, *, expires_in: float, kind: str = "access") -> str:
    """A token signed with the server's real token secret (read from its keys
    folder), for answers that cannot otherwise be reached in a test's time:
    an expired token, or one for a device the server never registered."""
    secret = base64.b64decode((server.keys_dir / "token-secret").read_bytes().strip())
    now = int(time.time())
    claims = {"sub": subject, "role": role, "type": kind, "fresh": False, "jti": str(uuid.uuid4()),
              "iat": now - 3600, "nbf": now - 3600, "exp": now + int(expires_in)}
    return pyjwt.encode(claims, secret, algorithm="HS256")


def wait_for_state(server, recording: Recording, token: str, state: str) -> dict:
    """Poll the status until the recording is finalized in `state`."""
    def finalized():
        status = recording.status(token).json()
        return status if status["state"] == state and status["manifest_version"] else None

    return server.wait_for(finalized, timeout=30)


# What each flow below must have been answered, as (operationId, status).
# Together the flows cover every operation and every success status of the
# document (test_the_flows_cover_every_operation); each flow checks its own
# set, so the coverage does not depend on which tests run or in what order.
FLOWS: dict[str, set[tuple[str, int]]] = {
    "recording": {
        ("getServerKeys", 200), ("getOpenApiDocument", 200), ("login", 200), ("login", 401),
        ("refreshAccessToken", 200), ("registerDevice", 201), ("createRecording", 201), ("createRecording", 200),
        ("createRecording", 409), ("putChunk", 201), ("putChunk", 200), ("putChunk", 400), ("putChunk", 404),
        ("putChunk", 409), ("putChunk", 413), ("putChunk", 422), ("getRecordingStatus", 200),
        ("getRecordingStatus", 404), ("completeRecording", 202), ("getManifest", 200), ("getManifest", 403),
        ("getManifest", 404), ("getManifestSignature", 200), ("getManifestSignature", 400),
        ("getManifestTimestamp", 200), ("getManifestTimestamp", 400), ("getManifestTimestamp", 404), ("getFootage", 200),
        ("getFootage", 206), ("getFootage", 403), ("getFootage", 416),
    },
    "retrieval": {
        ("listRecordings", 200), ("listRecordings", 400), ("listRecordings", 401), ("listRecordings", 403),
        ("getRecording", 200), ("getRecording", 400), ("getRecording", 403), ("getRecording", 404),
    },
    "account": {
        ("getCurrentAccount", 200), ("getCurrentAccount", 401), ("getCurrentAccount", 403), ("logout", 204),
        ("logout", 401), ("logout", 403), ("refreshAccessToken", 401), ("changePassword", 204),
        ("changePassword", 400), ("startTotpSetup", 200), ("startTotpSetup", 409),
        ("confirmTotp", 200), ("confirmTotp", 400), ("confirmTotp", 409), ("login", 200), ("login", 401),
    },
    "lockout": {("login", 401), ("login", 429)},
    "second factor removal": {("removeTotp", 200), ("removeTotp", 400)},
    "operator": {("getHealth", 200), ("getReadiness", 200), ("getMetrics", 200), ("getMetrics", 401),
                 ("getMetrics", 404)},
    "organisation": {
        ("listStaff", 200), ("listStaff", 401), ("listStaff", 403), ("createStaff", 201), ("createStaff", 400),
        ("getStaff", 200), ("getStaff", 400), ("getStaff", 404), ("updateStaff", 200), ("updateStaff", 400),
        ("updateStaff", 403), ("updateStaff", 404), ("listDevices", 200), ("listDevices", 400),
        ("listDevices", 403), ("getDevice", 200), ("getDevice", 400), ("getDevice", 404), ("revokeDevice", 200),
        ("revokeDevice", 400), ("revokeDevice", 404), ("listEnrollmentCodes", 200), ("listEnrollmentCodes", 403),
        ("createEnrollmentCode", 201), ("createEnrollmentCode", 400), ("revokeEnrollmentCode", 200),
        ("revokeEnrollmentCode", 404), ("registerDevice", 403), ("listAuditEntries", 200),
        ("listAuditEntries", 400), ("listAuditEntries", 401), ("listAuditEntries", 403), ("getRecording", 404),
        ("getRecordingStatus", 401), ("getRecordingStatus", 404),
    },
    "copies": {
        ("requestCopy", 201), ("requestCopy", 400), ("requestCopy", 401), ("requestCopy", 403), ("requestCopy", 404),
        ("listCopyRequests", 200), ("listCopyRequests", 400), ("listCopyRequests", 401), ("listCopyRequests", 403),
        ("getCopyRequest", 200), ("getCopyRequest", 400), ("getCopyRequest", 401), ("getCopyRequest", 403),
        ("getCopyRequest", 404), ("approveCopyRequest", 200), ("approveCopyRequest", 400),
        ("approveCopyRequest", 401), ("approveCopyRequest", 403), ("approveCopyRequest", 404),
        ("approveCopyRequest", 409), ("denyCopyRequest", 200), ("denyCopyRequest", 400), ("denyCopyRequest", 403),
        ("denyCopyRequest", 404), ("denyCopyRequest", 409), ("getCopyBundle", 200), ("getCopyBundle", 206),
        ("getCopyBundle", 400), ("getCopyBundle", 403), ("getCopyBundle", 404),
        ("getCopyBundle", 409), ("getCopyBundle", 416), ("listAuditEntries", 200),
    },
    "second factor": {
        ("getCurrentAccount", 200), ("startTotpSetup", 200), ("confirmTotp", 200), ("listStaff", 403),
        ("listStaff", 200), ("listRecordings", 403), ("getRecording", 403), ("getRecordingStatus", 403),
        ("getManifest", 403), ("getManifestSignature", 403), ("getFootage", 403), ("listAuditEntries", 403),
        ("listCopyRequests", 403), ("getCopyRequest", 403), ("getCopyBundle", 403), ("approveCopyRequest", 403),
        ("denyCopyRequest", 403), ("requestCopy", 403), ("logout", 204),
    },
}


def assert_flow_seen(conformance: Conformance, flow: str) -> None:
    missing = FLOWS[flow] - conformance.seen_operations()
    assert missing == set(), f"the {flow} flow never got these answers: {sorted(missing)}"


# -- the document itself --------------------------------------------------

def test_document_is_served_as_openapi_3_1(server, document, conformance):
    answer = requests.get(server.url + "/v1/openapi.json")
    assert answer.json() == document
    assert answer.headers["Content-Type"].startswith("application/json")
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        **document["components"]["securitySchemes"]["bearerAuth"], "type": "http", "scheme": "bearer",
        "bearerFormat": "JWT"}
    validate_openapi_document(document)  # the whole document against the OpenAPI 3.1 schema
    for schema in document["components"]["schemas"].values():
        Draft202012Validator.check_schema(schema)
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"] and error["additionalProperties"] is False


def test_every_reference_in_the_document_resolves(server, document):
    checker = Conformance(document, server.url)
    refs = []

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    assert refs
    for reference in refs:
        assert reference.startswith("#/"), reference
        checker.resolve({"$ref": reference}, "")  # raises KeyError if dangling


def test_every_route_is_documented_and_every_operation_exists(document, make_app):
    app = make_app()
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/") and rule.rule not in OPERATOR_PATHS:
            continue  # pages (console, recorder, static files): tests/pages
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        served |= {(method, path) for method in rule.methods - IGNORED_METHODS}
    documented = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item if method in HTTP_METHODS}
    assert served - documented == set(), "routes the document does not describe"
    assert documented - served == set(), "documented operations the app does not serve"
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            assert operation.get("operationId") and operation.get("responses"), f"{method} {path}"
            secured = operation.get("security", document.get("security")) != []
            if secured:
                assert "401" in operation["responses"], f"{method} {path} needs a token but lists no 401"
            assert "500" in operation["responses"], f"{method} {path}"


def test_the_flows_cover_every_operation(document):
    operations = {op["operationId"]: op for item in document["paths"].values()
                  for method, op in item.items() if method in HTTP_METHODS}
    wanted = set().union(*FLOWS.values())
    for operation_id, status in wanted:
        assert str(status) in operations[operation_id]["responses"], (operation_id, status)
    assert set(operations) - {operation_id for operation_id, _ in wanted} == set(), "operations no flow exercises"
    successes = {(operation_id, int(status)) for operation_id, op in operations.items()
                 for status in op["responses"] if status.startswith("2")}
    assert successes - wanted == set(), "success answers no flow exercises"


def test_a_renamed_field_or_a_missing_status_fails_the_check(server, document):
    """The checks have teeth: a real receipt passes the real document and
    fails a document in which one field was renamed or a status dropped."""
    phone = Phone(server)
    recording = phone.create_recording()
    receipt = recording.put(0, recording.chunk(0))
    assert receipt.status_code == 201
    Conformance(document, server.url).check(receipt)

    renamed = copy.deepcopy(document)
    chunk_receipt = renamed["components"]["schemas"]["ChunkReceipt"]
    chunk_receipt["properties"]["received"] = chunk_receipt["properties"].pop("received_at")
    chunk_receipt["required"] = ["received" if f == "received_at" else f for f in chunk_receipt["required"]]
    with pytest.raises(AssertionError, match="does not match the document"):
        Conformance(renamed, server.url).check(receipt)

    error_renamed = copy.deepcopy(document)
    error_schema = error_renamed["components"]["schemas"]["Error"]
    error_schema["properties"]["code"] = error_schema["properties"].pop("error")
    error_schema["required"] = ["code", "message"]
    conflict = recording.put(0, recording.chunk(0, b"other bytes"))
    assert conflict.status_code == 409
    Conformance(document, server.url).check(conflict)
    with pytest.raises(AssertionError, match="does not match the document"):
        Conformance(error_renamed, server.url).check(conflict)

    dropped = copy.deepcopy(document)
    del dropped["paths"]["/v1/recordings/{recording_id}/chunks/{index}"]["put"]["responses"]["201"]
    with pytest.raises(AssertionError, match="status not documented"):
        Conformance(dropped, server.url).check(receipt)


# -- a real flow, every answer checked -------------------------------------

def test_a_whole_recording_flow_matches_the_document(server, conformance):
    url = server.url
    assert requests.get(url + "/v1/openapi.json").status_code == 200
    keys = requests.get(url + "/v1/keys").json()
    phone, stranger = Phone(server), Phone(server)

    # Staff first: the CLI takes seconds, and the server finalizes a
    # recording after 2 idle seconds.
    observer = server.staff_token("flow-observer", "observer")
    wrong = requests.post(url + "/v1/auth/login", json={"username": "flow-observer", "password": "wrong password"})
    assert (wrong.status_code, error_of(wrong)) == (401, "bad_credentials")
    nobody = requests.post(url + "/v1/auth/login", json={"username": "no-such-user", "password": "wrong password"})
    assert (nobody.status_code, nobody.json()) == (401, wrong.json())
    password = "a lawyer's long password"
    assert server.cli("create-user", "flow-lawyer", "--role", "lawyer", password=password).returncode == 0
    login = requests.post(url + "/v1/auth/login", json={"username": "flow-lawyer", "password": password})
    assert login.status_code == 200
    lawyer_refresh = requests.post(url + "/v1/auth/refresh", headers=bearer(login.json()["refresh_token"]))
    assert lawyer_refresh.status_code == 200
    lawyer = lawyer_refresh.json()["access_token"]

    # Create, ask for a manifest too early, retry (200, same answer), and
    # two kinds of conflict.
    body, content_key = phone.recording_body()
    created = requests.post(url + "/v1/recordings", json=body, headers=phone.auth)
    assert created.status_code == 201
    early = requests.get(f"{url}/v1/recordings/{body['recording_id']}/manifest", headers=bearer(observer))
    assert (early.status_code, error_of(early)) == (404, "not_ready")
    assert created.json()["max_chunk_bytes"] == MIB and created.json()["state"] == "receiving"
    retried = requests.post(url + "/v1/recordings", json=body, headers=phone.auth)
    assert retried.status_code == 200 and retried.json() == created.json()
    other_body, _ = phone.recording_body(body["recording_id"])
    conflict = requests.post(url + "/v1/recordings", json=other_body, headers=phone.auth)
    assert (conflict.status_code, error_of(conflict)) == (409, "recording_conflict")
    taken = requests.post(url + "/v1/recordings", json=body, headers=stranger.auth)
    assert (taken.status_code, error_of(taken)) == (409, "recording_conflict")
    recording = Recording(phone, body["recording_id"], content_key)

    pieces = [bytes([65 + i]) * (1000 + i) for i in range(4)]
    first = recording.chunk(0, pieces[0])
    stored = recording.put(0, first)
    assert stored.status_code == 201
    assert stored.json()["index"] == 0 and stored.json()["size"] == len(first)
    assert stored.json()["sha256"] == hashlib.sha256(first).hexdigest()
    duplicate = recording.put(0, first)
    assert duplicate.status_code == 200 and duplicate.json() == stored.json()
    different = recording.put(0, recording.chunk(0, b"not the first bytes"))
    assert (different.status_code, error_of(different)) == (409, "chunk_conflict")

    second = recording.chunk(1, pieces[1])
    damaged = recording.put(1, second, digest=content_digest(second + b"x"))
    assert (damaged.status_code, error_of(damaged)) == (400, "digest_mismatch")
    wrong_flag = recording.put(1, recording.chunk(1, pieces[1], final=True))  # AAD says final, header not
    assert (wrong_flag.status_code, error_of(wrong_flag)) == (422, "chunk_unreadable")
    too_large = recording.put(1, bytes(MIB + 1))
    assert (too_large.status_code, error_of(too_large)) == (413, "chunk_too_large")
    foreign = Recording(stranger, recording.id, content_key)
    assert (foreign.put(1, second).status_code, foreign.status().status_code) == (404, 404)
    assert recording.put(1, second).status_code == 201

    # Chunk 3 is final; chunk 2 is still missing; nothing after 3 is taken.
    assert recording.put(3, recording.chunk(3, pieces[3], final=True), final=True).status_code == 201
    after_final = recording.put(4, recording.chunk(4))
    assert (after_final.status_code, error_of(after_final)) == (409, "past_final")
    status = recording.status()
    assert status.status_code == 200
    assert status.json()["received"] == [[0, 1], [3, 3]] and status.json()["missing"] == [[2, 2]]
    assert status.json()["final_index"] == 3
    completing = requests.post(f"{url}/v1/recordings/{recording.id}/complete", headers=phone.auth)
    assert completing.status_code == 202 and completing.json()["missing"] == [[2, 2]]

    # A refreshed device token sends the missing chunk.
    refreshed = requests.post(url + "/v1/auth/refresh", headers=bearer(phone.refresh_token))
    assert refreshed.status_code == 200
    phone.token = refreshed.json()["access_token"]
    assert recording.put(2, recording.chunk(2, pieces[2])).status_code == 201

    # Every chunk through the final one is held: finalized as complete (on a
    # slow machine the idle finalizer may have made an interrupted version
    # first, so the version is read rather than assumed).
    final_status = wait_for_state(server, recording, phone.token, "complete")
    assert final_status["missing"] == [] and final_status["received"] == [[0, 3]]
    version = final_status["manifest_version"]
    assert recording.status(lawyer).status_code == 200

    manifest = requests.get(f"{url}/v1/recordings/{recording.id}/manifest", headers=bearer(observer))
    assert manifest.status_code == 200 and manifest.headers["Witness-Manifest-Version"] == str(version)
    footage = b"".join(pieces)
    fields = manifest.json()
    assert fields["state"] == "complete" and [c["index"] for c in fields["chunks"]] == [0, 1, 2, 3]
    assert fields["footage"] == {"size": len(footage), "sha256": hashlib.sha256(footage).hexdigest()}
    assert fields["device_id"] == phone.device_id and fields["signing_key_id"] == keys["signing"]["key_id"]
    signature = requests.get(f"{url}/v1/recordings/{recording.id}/manifest.sig", headers=bearer(lawyer))
    assert signature.status_code == 200 and len(signature.content) == 64
    load_pem_public_key(keys["signing"]["public_key_pem"].encode()).verify(signature.content, manifest.content)
    stamp = requests.get(f"{url}/v1/recordings/{recording.id}/manifest.tsr", headers=bearer(lawyer))
    assert stamp.status_code == 200 and stamp.headers["Content-Type"] == "application/timestamp-reply"
    assert stamp.content[:1] == b"\x30"  # DER: a SEQUENCE (openssl checks it in test_timestamps.py)
    no_stamp = requests.get(f"{url}/v1/recordings/{recording.id}/manifest.tsr", params={"version": version + 1},
                            headers=bearer(lawyer))
    assert (no_stamp.status_code, error_of(no_stamp)) == (404, "not_found")
    not_external = requests.get(f"{url}/v1/recordings/{recording.id}/manifest.tsr", params={"tsa": "external"},
                                headers=bearer(lawyer))
    assert (not_external.status_code, error_of(not_external)) == (404, "not_found")  # no external TSA here
    odd_tsa = requests.get(f"{url}/v1/recordings/{recording.id}/manifest.tsr", params={"tsa": "elsewhere"},
                           headers=bearer(lawyer))
    assert (odd_tsa.status_code, error_of(odd_tsa)) == (400, "invalid_tsa")
    again = requests.get(f"{url}/v1/recordings/{recording.id}/manifest", params={"version": version},
                         headers=bearer(lawyer))
    assert again.status_code == 200 and again.content == manifest.content
    absent = requests.get(f"{url}/v1/recordings/{recording.id}/manifest", params={"version": version + 1},
                          headers=bearer(lawyer))
    assert (absent.status_code, error_of(absent)) == (404, "not_found")
    bad_version = requests.get(f"{url}/v1/recordings/{recording.id}/manifest.sig", params={"version": "0"},
                               headers=bearer(lawyer))
    assert (bad_version.status_code, error_of(bad_version)) == (400, "invalid_version")
    device_reads = requests.get(f"{url}/v1/recordings/{recording.id}/manifest", headers=phone.auth)
    assert (device_reads.status_code, error_of(device_reads)) == (403, "forbidden")

    media_url = f"{url}/v1/recordings/{recording.id}/media"
    whole = requests.get(media_url, headers=bearer(observer))
    assert whole.status_code == 200 and whole.content == footage
    assert whole.headers["Content-Type"] == "video/mp4"
    part = requests.get(media_url, headers={**bearer(observer), "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == footage[10:20]
    assert part.headers["Content-Range"] == f"bytes 10-19/{len(footage)}"
    tail = requests.get(media_url, headers={**bearer(observer), "Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == footage[-5:]
    beyond = requests.get(media_url, headers={**bearer(observer), "Range": f"bytes={len(footage)}-"})
    assert (beyond.status_code, error_of(beyond)) == (416, "range_not_satisfiable")
    assert beyond.headers["Content-Range"] == f"bytes */{len(footage)}"
    device_media = requests.get(media_url, headers=phone.auth)
    assert (device_media.status_code, error_of(device_media)) == (403, "forbidden")

    assert_flow_seen(conformance, "recording")


def test_late_chunks_and_an_empty_final_chunk_match_the_document(server, conformance):
    phone = Phone(server)
    recording = phone.create_recording()
    assert recording.put(0, recording.chunk(0)).status_code == 201
    assert recording.put(2, recording.chunk(2)).status_code == 201
    custodian = server.staff_token("late-custodian", "custodian")
    # No final chunk: the idle finalizer makes it interrupted, gap listed.
    assert wait_for_state(server, recording, phone.token, "interrupted")["manifest_version"] == 1
    url = f"{server.url}/v1/recordings/{recording.id}"
    first = requests.get(url + "/manifest", headers=bearer(custodian))
    assert first.json()["version"] == 1 and first.json()["state"] == "interrupted"
    assert first.json()["gaps"] == [[1, 1]] and first.json()["final_index"] is None

    # A late chunk fills the gap, an empty final chunk marks the end.
    assert recording.put(1, recording.chunk(1)).status_code == 201
    assert recording.status().json()["state"] == "receiving"
    empty_final = recording.put(3, recording.chunk(3, b"", final=True), final=True)
    assert empty_final.status_code == 201 and empty_final.json()["size"] == 16  # the tag alone
    version = wait_for_state(server, recording, phone.token, "complete")["manifest_version"]
    latest = requests.get(url + "/manifest", headers=bearer(custodian))
    before = requests.get(url + "/manifest", params={"version": version - 1}, headers=bearer(custodian))
    assert latest.json()["version"] == version >= 2
    assert latest.json()["previous_manifest_sha256"] == hashlib.sha256(before.content).hexdigest()
    assert latest.json()["gaps"] == [] and latest.json()["chunks"][3]["size"] == 0
    kept = requests.get(url + "/manifest", params={"version": 1}, headers=bearer(custodian))
    assert kept.content == first.content


def test_token_failures_match_the_document(server, conformance):
    phone = Phone(server)
    recording = phone.create_recording()
    status_url = f"{server.url}/v1/recordings/{recording.id}/status"
    refresh_url = server.url + "/v1/auth/refresh"

    missing = requests.get(status_url)
    assert (missing.status_code, error_of(missing)) == (401, "unauthorized")
    garbage = requests.get(status_url, headers=bearer("not-a-token"))
    assert (garbage.status_code, error_of(garbage)) == (401, "invalid_token")
    refresh_as_access = requests.get(status_url, headers=bearer(phone.refresh_token))
    assert (refresh_as_access.status_code, error_of(refresh_as_access)) == (401, "invalid_token")
    access_as_refresh = requests.post(refresh_url, headers=phone.auth)
    assert (access_as_refresh.status_code, error_of(access_as_refresh)) == (401, "invalid_token")

    expired = forged_token(server, f"device:{phone.device_id}", "device", expires_in=-60)
    stale = recording.put(0, recording.chunk(0), token=expired)
    assert (stale.status_code, error_of(stale)) == (401, "token_expired")
    renewed = requests.post(refresh_url, headers=bearer(phone.refresh_token))
    assert recording.put(0, recording.chunk(0), token=renewed.json()["access_token"]).status_code == 201

    unknown_device = forged_token(server, f"device:{uuid.uuid4()}", "device", expires_in=600)
    revoked = requests.get(status_url, headers=bearer(unknown_device))
    assert (revoked.status_code, error_of(revoked)) == (401, "token_revoked")

    observer = server.staff_token("token-observer", "observer")
    assert requests.get(status_url, headers=bearer(observer)).status_code == 200
    staff_upload = recording.put(1, recording.chunk(1), token=observer)
    assert (staff_upload.status_code, error_of(staff_upload)) == (403, "forbidden")
    body, _ = phone.recording_body()
    staff_create = requests.post(server.url + "/v1/recordings", json=body, headers=bearer(observer))
    assert (staff_create.status_code, error_of(staff_create)) == (403, "forbidden")
    staff_complete = requests.post(f"{server.url}/v1/recordings/{recording.id}/complete", headers=bearer(observer))
    assert (staff_complete.status_code, error_of(staff_complete)) == (403, "forbidden")


def test_input_errors_match_the_document(server, conformance):
    url = server.url
    phone = Phone(server)
    recording = phone.create_recording()
    chunk = recording.chunk(0)

    def put_raw(path_id: str, index: str, headers: dict | None = None, data: bytes = chunk):
        sent = {**phone.auth, "Content-Type": "application/octet-stream", "Content-Digest": content_digest(data),
                **(headers or {})}
        return requests.put(f"{url}/v1/recordings/{path_id}/chunks/{index}", data=data, headers=sent)

    expectations = [
        (put_raw(recording.id.upper(), "0"), 400, "invalid_recording_id"),
        (put_raw(recording.id, "01"), 400, "invalid_index"),
        (put_raw(recording.id, str(2**31)), 400, "invalid_index"),
        (put_raw(str(uuid.uuid4()), "0"), 404, "not_found"),
        (put_raw(recording.id, "0", {"Content-Type": "video/mp4"}), 415, "unsupported_media_type"),
        (put_raw(recording.id, "0", {"Content-Digest": ""}), 400, "missing_digest"),
        (put_raw(recording.id, "0", {"Content-Digest": "sha-256=:c2hvcnQ=:"}), 400, "invalid_digest"),
        (put_raw(recording.id, "0", {"Witness-Final": "true"}), 400, "invalid_final"),
        (put_raw(recording.id, "0", {"Witness-Captured-At": "yesterday"}), 400, "invalid_captured_at"),
        (put_raw(recording.id, "0", {"Witness-Device-Signature": b64url(bytes(64))}), 422, "bad_device_signature"),
        (put_raw(recording.id, "0", data=b""), 422, "chunk_unreadable"),
        (requests.get(f"{url}/v1/recordings/not-a-uuid/status", headers=phone.auth), 400, "invalid_recording_id"),
        (requests.post(f"{url}/v1/recordings/{uuid.uuid4()}/complete", headers=phone.auth), 404, "not_found"),
    ]

    def create(**changes):
        body, _ = phone.recording_body()
        body.update(changes)
        return requests.post(url + "/v1/recordings", json=body, headers=phone.auth)

    sealed_elsewhere, _ = phone.recording_body()
    expectations += [
        (create(recording_id="ABC"), 400, "invalid_recording_id"),
        (create(content_type="text/plain"), 400, "invalid_content_type"),
        (create(started_at="2026-11-21T14:03:07"), 400, "invalid_started_at"),
        (create(key_id=7), 400, "invalid_key_id"),
        (create(sealed_key="too+short"), 400, "invalid_sealed_key"),
        (create(key_id="hpke-0000000000000000"), 422, "unknown_key_id"),
        (create(sealed_key=sealed_elsewhere["sealed_key"]), 422, "bad_sealed_key"),
        (requests.post(url + "/v1/recordings", data="[]", headers={**phone.auth, "Content-Type": "application/json"}),
         400, "invalid_body"),
        (requests.post(url + "/v1/recordings", json={"pad": "x" * 70_000}, headers=phone.auth),
         400, "body_too_large"),
        (requests.post(url + "/v1/devices", json={"public_key_pem": "not a key"}), 400, "invalid_public_key"),
        (requests.post(url + "/v1/devices", json={"enrollment_code": ""}), 400, "invalid_enrollment_code"),
        (requests.post(url + "/v1/devices", json={"enrollment_code": "nobody-gave-this-out"}),
         403, "enrollment_refused"),
        (requests.post(url + "/v1/auth/login", data="username=x"), 400, "invalid_body"),
    ]
    for response, status, code in expectations:
        answer = (response.status_code, error_of(response))
        assert answer == (status, code), f"{response.request.method} {response.request.url}"

    # Final-chunk rules.
    assert recording.put(2, recording.chunk(2)).status_code == 201
    below_held = recording.put(1, recording.chunk(1, final=True), final=True)
    assert (below_held.status_code, error_of(below_held)) == (409, "past_final")
    assert recording.put(3, recording.chunk(3, final=True), final=True).status_code == 201
    second_final = recording.put(1, recording.chunk(1, final=True), final=True)
    assert (second_final.status_code, error_of(second_final)) == (409, "past_final")


def test_device_signatures_match_the_document(server, conformance):
    key = Ed25519PrivateKey.generate()
    phone = Phone(server, public_key_pem=public_key_pem(key.public_key()))
    recording = phone.create_recording()
    chunk = recording.chunk(0)
    unsigned = recording.put(0, chunk)
    assert (unsigned.status_code, error_of(unsigned)) == (422, "bad_device_signature")
    forged = recording.put(0, chunk, headers={"Witness-Device-Signature": b64url(bytes(64))})
    assert (forged.status_code, error_of(forged)) == (422, "bad_device_signature")
    signature = b64url(sign_chunk(key, recording.id, 0, hashlib.sha256(chunk).hexdigest()))
    assert recording.put(0, chunk, headers={"Witness-Device-Signature": signature}).status_code == 201


# -- staff retrieval, own accounts, custodians, audit ----------------------

def test_finding_and_reading_recordings_matches_the_document(server, conformance):
    url = server.url
    observer = Staff(server, "find-observer", "observer")
    phone = Phone(server)
    gapped = phone.create_recording()
    assert gapped.put(0, gapped.chunk(0)).status_code == 201
    captured = {"Witness-Captured-At": "2026-11-21T15:03:07.123+01:00"}
    assert gapped.put(2, gapped.chunk(2), headers=captured).status_code == 201
    whole = phone.create_recording()
    piece = b"the whole recording"
    assert whole.put(0, whole.chunk(0, piece, final=True), final=True).status_code == 201
    empty = phone.create_recording()
    wait_for_state(server, whole, phone.token, "complete")
    everything = {gapped.id, whole.id, empty.id}

    def listed(**params) -> list[dict]:
        answer = requests.get(url + "/v1/recordings", params={"device_id": phone.device_id, **params},
                              headers=observer.auth)
        assert answer.status_code == 200, answer.text
        assert answer.json()["next_cursor"] is None
        return answer.json()["recordings"]

    def ids(**params) -> set[str]:
        return {summary["recording_id"] for summary in listed(**params)}

    # Newest first, one page at a time.
    pages, cursor = [], None
    while True:
        answer = requests.get(url + "/v1/recordings", headers=observer.auth,
                              params={"device_id": phone.device_id, "limit": 1,
                                      **({"cursor": cursor} if cursor else {})})
        assert answer.status_code == 200 and len(answer.json()["recordings"]) == 1
        pages += answer.json()["recordings"]
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert {summary["recording_id"] for summary in pages} == everything and len(pages) == 3
    assert pages == sorted(pages, key=lambda s: (s["created_at"], s["recording_id"]), reverse=True)
    summaries = {summary["recording_id"]: summary for summary in listed()}
    assert summaries[gapped.id]["chunks_held"] == 2 and summaries[gapped.id]["missing_chunks"] == 1
    assert summaries[gapped.id]["has_gaps"] is True and summaries[gapped.id]["final_index"] is None
    assert summaries[whole.id]["state"] == "complete" and summaries[whole.id]["final_index"] == 0
    assert summaries[whole.id]["footage_size"] == len(piece) and summaries[whole.id]["manifest_version"] == 1
    assert summaries[empty.id]["chunks_held"] == 0 and summaries[empty.id]["has_gaps"] is False

    # Filters.
    assert ids(has_gaps="true") == {gapped.id} and ids(has_gaps="0") == {whole.id, empty.id}
    assert ids(state="complete") == {whole.id}
    assert whole.id in ids(state="receiving,complete") <= everything
    assert whole.id in ids(receiving="false") and whole.id not in ids(receiving="true")
    assert ids(**{"from": "2999-01-01T00:00:00Z"}) == set() and ids(to="2000-01-01T00:00:00Z") == set()
    assert ids(**{"from": "2000-01-01T00:00:00+01:00", "to": "2999-01-01T00:00:00Z"}) == everything
    stranger = Phone(server)
    assert ids(device_id=stranger.device_id) == set()

    foreign_cursor = b64url(json.dumps(["devices", "2026-11-21T14:03:07.123Z", str(uuid.uuid4())]).encode())
    for params, code in [
        ({"cursor": "not a cursor"}, "invalid_cursor"), ({"cursor": foreign_cursor}, "invalid_cursor"),
        ({"limit": "0"}, "invalid_limit"), ({"limit": "201"}, "invalid_limit"),
        ({"state": "lost"}, "invalid_state"), ({"device_id": phone.device_id.upper()}, "invalid_device_id"),
        ({"from": "yesterday"}, "invalid_from"), ({"to": "2026-11-21T14:03:07"}, "invalid_to"),
        ({"has_gaps": "yes"}, "invalid_has_gaps"), ({"receiving": "maybe"}, "invalid_receiving"),
    ]:
        refused = requests.get(url + "/v1/recordings", params=params, headers=observer.auth)
        assert (refused.status_code, error_of(refused)) == (400, code), params
    device_list = requests.get(url + "/v1/recordings", headers=phone.auth)
    assert (device_list.status_code, error_of(device_list)) == (403, "forbidden")
    anonymous = requests.get(url + "/v1/recordings")
    assert (anonymous.status_code, error_of(anonymous)) == (401, "unauthorized")

    # One recording in detail.
    detail = requests.get(f"{url}/v1/recordings/{gapped.id}", headers=observer.auth)
    assert detail.status_code == 200
    fields = detail.json()
    assert fields["received"] == [[0, 0], [2, 2]] and fields["missing"] == [[1, 1]]
    assert [chunk["index"] for chunk in fields["chunks"]] == [0, 2]
    assert fields["chunks"][1]["captured_at"] == "2026-11-21T14:03:07.123Z"
    assert fields["chunks"][0]["captured_at"] is None and fields["chunks"][0]["device_signed"] is False
    assert fields["complete_requested_at"] is None
    whole_detail = requests.get(f"{url}/v1/recordings/{whole.id}", headers=observer.auth).json()
    manifest = requests.get(f"{url}/v1/recordings/{whole.id}/manifest", headers=observer.auth)
    assert [(m["version"], m["state"]) for m in whole_detail["manifests"]] == [(1, "complete")]
    assert whole_detail["manifests"][0]["sha256"] == hashlib.sha256(manifest.content).hexdigest()
    assert whole_detail["chunks"][0]["final"] is True and whole_detail["chunks"][0]["size"] == len(piece)

    unknown = requests.get(f"{url}/v1/recordings/{uuid.uuid4()}", headers=observer.auth)
    assert (unknown.status_code, error_of(unknown)) == (404, "not_found")
    malformed = requests.get(f"{url}/v1/recordings/{gapped.id.upper()}", headers=observer.auth)
    assert (malformed.status_code, error_of(malformed)) == (400, "invalid_recording_id")
    device_detail = requests.get(f"{url}/v1/recordings/{gapped.id}", headers=phone.auth)
    assert (device_detail.status_code, error_of(device_detail)) == (403, "forbidden")
    assert_flow_seen(conformance, "retrieval")


def _wrong_totp_code(secret: bytes) -> str:
    """Six digits no step near now accepts."""
    near = {current_code(secret, time.time() + drift) for drift in range(-90, 91, 30)}
    return next(code for code in (f"{n}" * 6 for n in range(10)) if code not in near)


def test_own_account_operations_match_the_document(server, conformance):
    url = server.url
    lawyer = Staff(server, "self-lawyer", "lawyer")
    phone = Phone(server)
    me = requests.get(url + "/v1/auth/me", headers=lawyer.auth)
    assert me.status_code == 200
    assert me.json()["username"] == "self-lawyer" and me.json()["role"] == "lawyer"
    assert me.json()["organisation"]["slug"] == "default" and me.json()["totp_setup_required"] is False
    assert me.json()["totp_enabled"] is False and me.json()["disabled"] is False
    device_me = requests.get(url + "/v1/auth/me", headers=phone.auth)
    assert (device_me.status_code, error_of(device_me)) == (403, "forbidden")
    anonymous_me = requests.get(url + "/v1/auth/me")
    assert (anonymous_me.status_code, error_of(anonymous_me)) == (401, "unauthorized")

    # Logging out (with either token) ends that session, not the others.
    second = lawyer.login()
    out = requests.post(url + "/v1/auth/logout", headers=bearer(second["refresh_token"]))
    assert out.status_code == 204 and out.content == b""
    for ended in (requests.post(url + "/v1/auth/refresh", headers=bearer(second["refresh_token"])),
                  requests.get(url + "/v1/auth/me", headers=bearer(second["access_token"]))):
        assert (ended.status_code, error_of(ended)) == (401, "token_revoked")
    assert requests.get(url + "/v1/auth/me", headers=lawyer.auth).status_code == 200
    assert requests.post(url + "/v1/auth/logout", headers=lawyer.auth).status_code == 204
    twice = requests.post(url + "/v1/auth/logout", headers=lawyer.auth)
    assert (twice.status_code, error_of(twice)) == (401, "token_revoked")
    device_logout = requests.post(url + "/v1/auth/logout", headers=phone.auth)
    assert (device_logout.status_code, error_of(device_logout)) == (403, "forbidden")

    # A new password needs the current one and ends every session.
    session = lawyer.login()
    password_url = url + "/v1/auth/password"
    new_password = "a brand new lawyer passphrase"
    wrong_current = requests.post(password_url, headers=bearer(session["access_token"]),
                                  json={"current_password": "not my password", "new_password": new_password})
    assert (wrong_current.status_code, error_of(wrong_current)) == (400, "wrong_current_password")
    weak = requests.post(password_url, headers=bearer(session["access_token"]),
                         json={"current_password": lawyer.password, "new_password": "too short"})
    assert (weak.status_code, error_of(weak)) == (400, "weak_password")
    not_json = requests.post(password_url, headers=bearer(session["access_token"]), data="current=x")
    assert (not_json.status_code, error_of(not_json)) == (400, "invalid_body")
    changed = requests.post(password_url, headers=bearer(session["access_token"]),
                            json={"current_password": lawyer.password, "new_password": new_password})
    assert changed.status_code == 204 and changed.content == b""
    stale = requests.get(url + "/v1/auth/me", headers=bearer(session["access_token"]))
    assert (stale.status_code, error_of(stale)) == (401, "token_revoked")
    old = requests.post(url + "/v1/auth/login", json={"username": "self-lawyer", "password": lawyer.password})
    assert (old.status_code, error_of(old)) == (401, "bad_credentials")
    lawyer.password = new_password
    session = lawyer.login()
    headers = bearer(session["access_token"])

    # A second factor: a secret, a wrong code, the right one, then logins need it.
    setup = requests.post(url + "/v1/auth/totp", headers=headers)
    assert setup.status_code == 200 and setup.json()["otpauth_uri"].startswith("otpauth://totp/")
    encoded = setup.json()["secret"]
    secret = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
    wrong_code = _wrong_totp_code(secret)
    confirm_url = url + "/v1/auth/totp/confirm"
    mistaken = requests.post(confirm_url, headers=headers, json={"code": wrong_code})
    assert (mistaken.status_code, error_of(mistaken)) == (400, "invalid_totp_code")
    no_body = requests.post(confirm_url, headers=headers)
    assert (no_body.status_code, error_of(no_body)) == (400, "invalid_body")
    confirmed = requests.post(confirm_url, headers=headers, json={"code": current_code(secret, time.time())})
    assert confirmed.status_code == 200 and confirmed.json() == {"totp_enabled": True}
    for already in (requests.post(confirm_url, headers=headers, json={"code": current_code(secret, time.time())}),
                    requests.post(url + "/v1/auth/totp", headers=headers)):
        assert (already.status_code, error_of(already)) == (409, "totp_already_enabled")
    assert requests.get(url + "/v1/auth/me", headers=headers).json()["totp_enabled"] is True

    credentials = {"username": "self-lawyer", "password": new_password}
    without_code = requests.post(url + "/v1/auth/login", json=credentials)
    assert (without_code.status_code, error_of(without_code)) == (401, "totp_required")
    wrong_login = requests.post(url + "/v1/auth/login", json={**credentials, "totp": wrong_code})
    assert (wrong_login.status_code, error_of(wrong_login)) == (401, "bad_credentials")
    # The confirming code's step is used up (no replays): the next step's code.
    logged_in = requests.post(url + "/v1/auth/login",
                              json={**credentials, "totp": current_code(secret, time.time() + 30)})
    assert logged_in.status_code == 200 and set(logged_in.json()) == {"access_token", "refresh_token"}
    assert_flow_seen(conformance, "account")


def test_login_throttling_matches_the_document(server, conformance):
    password = "the throttled observer's password"
    assert server.cli("create-user", "throttled-observer", "--role", "observer", password=password).returncode == 0
    # 5 failures (the WITNESS_LOGIN_MAX_FAILURES default) in each worker process
    # they reach, each with its own counts: the first 5 are always checked,
    # and as the waits grow in every process, a 429 comes soon after.
    codes = []
    while (429, "too_many_attempts") not in codes and len(codes) < 40:
        answer = requests.post(server.url + "/v1/auth/login",
                               json={"username": "throttled-observer", "password": "not the password"})
        codes.append((answer.status_code, error_of(answer)))
    assert codes[:5] == [(401, "bad_credentials")] * 5 and codes[-1] == (429, "too_many_attempts"), codes
    assert 0 < int(answer.headers["Retry-After"]) <= 900
    assert_flow_seen(conformance, "lockout")


def test_removing_a_second_factor_matches_the_document(server, conformance):
    url = server.url
    observer = Staff(server, "remover-observer", "observer")
    encoded = requests.post(url + "/v1/auth/totp", headers=observer.auth).json()["secret"]
    secret = base64.b32decode(encoded + "=" * (-len(encoded) % 8))
    # Confirmed with the previous step's code (one step of drift either way is
    # accepted), so the current code is still unused for the removal.
    spent = current_code(secret, time.time() - 30)
    confirmed = requests.post(url + "/v1/auth/totp/confirm", headers=observer.auth, json={"code": spent})
    assert confirmed.status_code == 200
    remove_url = url + "/v1/auth/totp/remove"
    for body in ({"code": _wrong_totp_code(secret)}, {}, {"code": spent}):
        wrong = requests.post(remove_url, headers=observer.auth, json=body)
        assert (wrong.status_code, error_of(wrong)) == (400, "invalid_totp_code"), body
    assert observer.me()["totp_enabled"] is True
    removed = requests.post(remove_url, headers=observer.auth, json={"code": current_code(secret, time.time())})
    assert removed.status_code == 200 and removed.json() == {"totp_enabled": False}
    assert observer.me()["totp_enabled"] is False
    assert observer.login()  # the password alone again
    assert_flow_seen(conformance, "second factor removal")


def test_running_an_organisation_matches_the_document(server, conformance):
    url = server.url
    custodian = Staff(server, "org-custodian", "custodian")
    observer = Staff(server, "org-observer", "observer")
    phone = Phone(server)
    recording = phone.create_recording()
    assert recording.put(0, recording.chunk(0)).status_code == 201

    def get(path: str, **params) -> requests.Response:
        return requests.get(url + path, params=params, headers=custodian.auth)

    def post(path: str, headers: dict | None = None, **kwargs) -> requests.Response:
        return requests.post(url + path, headers={**custodian.auth, **(headers or {})}, **kwargs)

    def patch(path: str, body) -> requests.Response:
        return requests.patch(url + path, json=body, headers=custodian.auth)

    def refused(response: requests.Response, status: int, code: str) -> None:
        assert (response.status_code, error_of(response)) == (status, code), response.request.url

    # Custodians only.
    for path in ("/v1/staff", "/v1/devices", "/v1/enrollment-codes", "/v1/audit"):
        refused(requests.get(url + path, headers=observer.auth), 403, "forbidden")
    refused(requests.get(url + "/v1/staff", headers=phone.auth), 403, "forbidden")
    refused(requests.get(url + "/v1/staff"), 401, "unauthorized")
    refused(requests.get(url + "/v1/audit"), 401, "unauthorized")

    # People.
    listed = get("/v1/staff")
    assert listed.status_code == 200
    assert {"org-custodian", "org-observer"} <= {account["username"] for account in listed.json()["staff"]}
    new = {"username": "org-made-lawyer", "role": "lawyer", "password": "the made lawyer's password"}
    made = post("/v1/staff", json=new)
    assert made.status_code == 201
    account = made.json()
    assert (account["username"], account["role"], account["disabled"], account["totp_enabled"]) == \
        ("org-made-lawyer", "lawyer", False, False)
    assert account["organisation_id"] == custodian.me()["organisation"]["id"]
    for body, code in [
        (new, "username_taken"), ({**new, "username": "Not Valid"}, "invalid_username"),
        ({**new, "username": "org-made-2", "role": "boss"}, "invalid_role"),
        ({**new, "username": "org-made-2", "password": "short"}, "weak_password"),
    ]:
        refused(post("/v1/staff", json=body), 400, code)
    refused(post("/v1/staff", data="[]", headers={"Content-Type": "application/json"}), 400, "invalid_body")
    account_path = f"/v1/staff/{account['id']}"
    assert get(account_path).json() == account
    refused(get("/v1/staff/0"), 400, "invalid_staff_id")
    refused(get("/v1/staff/abc"), 400, "invalid_staff_id")
    refused(get("/v1/staff/999999999999"), 404, "not_found")

    made_session = requests.post(url + "/v1/auth/login", json={"username": new["username"],
                                                               "password": new["password"]}).json()
    demoted = patch(account_path, {"role": "observer"})
    assert demoted.status_code == 200 and demoted.json()["role"] == "observer"
    refused(requests.get(url + "/v1/auth/me", headers=bearer(made_session["access_token"])), 401, "token_revoked")
    disabled = patch(account_path, {"disabled": True})
    assert disabled.status_code == 200 and disabled.json()["disabled"] is True and disabled.json()["disabled_at"]
    refused(requests.post(url + "/v1/auth/login", json={"username": new["username"], "password": new["password"]}),
            401, "bad_credentials")
    enabled = patch(account_path, {"disabled": False})
    assert enabled.json()["disabled"] is False and enabled.json()["disabled_at"] is None
    reset = patch(account_path, {"password": "a password set by the custodian", "reset_totp": True})
    assert reset.status_code == 200 and reset.json()["totp_enabled"] is False
    for body, code in [
        ({}, "invalid_body"), ({"nickname": "x"}, "invalid_field"), ({"disabled": "yes"}, "invalid_disabled"),
        ({"reset_totp": 1}, "invalid_reset_totp"), ({"role": "boss"}, "invalid_role"),
        ({"password": "short"}, "weak_password"),
    ]:
        refused(patch(account_path, body), 400, code)
    refused(patch("/v1/staff/abc", {"disabled": True}), 400, "invalid_staff_id")
    refused(patch("/v1/staff/999999999999", {"disabled": True}), 404, "not_found")
    own_path = f"/v1/staff/{custodian.id}"
    refused(patch(own_path, {"disabled": True}), 403, "forbidden")
    refused(patch(own_path, {"role": "observer"}), 403, "forbidden")
    # One's own password and second factor only with proof (the account endpoints).
    refused(patch(own_path, {"password": "a takeover passphrase"}), 403, "use_account_endpoint")
    refused(patch(own_path, {"reset_totp": True}), 403, "use_account_endpoint")
    assert custodian.me()["role"] == "custodian"
    assert custodian.login()  # the password is still the old one

    # Devices.
    newer = Phone(server)
    first_page = get("/v1/devices", limit=1)
    assert first_page.status_code == 200 and len(first_page.json()["devices"]) == 1
    second_page = get("/v1/devices", limit=1, cursor=first_page.json()["next_cursor"])
    assert second_page.status_code == 200
    assert second_page.json()["devices"][0]["created_at"] <= first_page.json()["devices"][0]["created_at"]
    assert second_page.json()["devices"] != first_page.json()["devices"]
    refused(get("/v1/devices", cursor="garbage"), 400, "invalid_cursor")
    refused(get("/v1/devices", limit="201"), 400, "invalid_limit")
    device = get(f"/v1/devices/{phone.device_id}")
    assert device.status_code == 200
    assert (device.json()["recordings"], device.json()["revoked_at"], device.json()["signs_chunks"]) == (1, None, False)
    assert device.json()["last_received_at"] is not None
    refused(get(f"/v1/devices/{uuid.uuid4()}"), 404, "not_found")
    refused(get("/v1/devices/NOT-A-UUID"), 400, "invalid_device_id")
    revoked = post(f"/v1/devices/{phone.device_id}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert revoked.json()["revoked_by"] == "staff:org-custodian"
    assert post(f"/v1/devices/{phone.device_id}/revoke").json() == revoked.json()
    refused(recording.status(), 401, "token_revoked")
    assert newer.create_recording().status(newer.token).status_code == 200
    refused(post(f"/v1/devices/{uuid.uuid4()}/revoke"), 404, "not_found")
    refused(post("/v1/devices/abc/revoke"), 400, "invalid_device_id")

    # Enrollment codes.
    created = post("/v1/enrollment-codes", json={"note": "spring march"})
    assert created.status_code == 201
    code = created.json()
    assert (code["note"], code["devices"], code["revoked_at"], code["created_by"]) == \
        ("spring march", 0, None, "staff:org-custodian")
    refused(post("/v1/enrollment-codes", json={"note": "x" * 201}), 400, "invalid_note")
    refused(post("/v1/enrollment-codes", json={"note": 5}), 400, "invalid_note")
    refused(post("/v1/enrollment-codes"), 400, "invalid_body")
    Phone(server, enrollment_code=code["code"])
    codes = get("/v1/enrollment-codes")
    assert codes.status_code == 200
    assert [c["devices"] for c in codes.json()["enrollment_codes"] if c["code"] == code["code"]] == [1]
    code_revoked = post(f"/v1/enrollment-codes/{code['code']}/revoke")
    assert code_revoked.status_code == 200 and code_revoked.json()["revoked_at"]
    assert post(f"/v1/enrollment-codes/{code['code']}/revoke").json() == code_revoked.json()
    refused(requests.post(url + "/v1/devices", json={"enrollment_code": code["code"]}), 403, "enrollment_refused")
    refused(post("/v1/enrollment-codes/no-such-code/revoke"), 404, "not_found")

    # The audit log.
    assert get(f"/v1/recordings/{recording.id}").status_code == 200
    custody = get("/v1/audit", recording_id=recording.id, order="asc")
    assert custody.status_code == 200
    entries = custody.json()["entries"]
    assert {e["recording_id"] for e in entries} == {recording.id}
    assert [e["action"] for e in entries][:2] == ["recording.created", "chunk.received"]
    assert [e["actor"] for e in entries if e["action"] == "recording.viewed"] == ["staff:org-custodian"]
    assert [e["recording_prev_sha256"] for e in entries] == ["0" * 64] + [e["sha256"] for e in entries[:-1]]
    revocations = get("/v1/audit", action="device.revoked", actor="staff:org-custodian")
    assert [e["detail"] for e in revocations.json()["entries"]] == [{"device_id": phone.device_id}]
    mine = get("/v1/audit", actor="staff:org-custodian", order="asc", limit=2)
    assert len(mine.json()["entries"]) == 2 and mine.json()["next_cursor"]
    more = get("/v1/audit", actor="staff:org-custodian", order="asc", limit=2, cursor=mine.json()["next_cursor"])
    assert more.status_code == 200 and more.json()["entries"][0]["id"] > mine.json()["entries"][-1]["id"]
    refused(get("/v1/audit", actor="staff:org-custodian", cursor=mine.json()["next_cursor"]), 400, "invalid_cursor")
    assert get("/v1/audit", **{"from": "2999-01-01T00:00:00Z"}).json() == {"entries": [], "next_cursor": None}
    assert get("/v1/audit", to="2000-01-01T00:00:00Z").json()["entries"] == []
    for params, code in [
        ({"order": "sideways"}, "invalid_order"), ({"limit": "501"}, "invalid_limit"), ({"limit": "0"}, "invalid_limit"),
        ({"recording_id": "abc"}, "invalid_recording_id"), ({"actor": ""}, "invalid_actor"),
        ({"action": "x" * 201}, "invalid_action"), ({"from": "yesterday"}, "invalid_from"),
        ({"to": "noon"}, "invalid_to"), ({"cursor": "garbage"}, "invalid_cursor"),
    ]:
        refused(get("/v1/audit", **params), 400, code)

    # Another organisation's things answer 404 and are left out of lists.
    assert server.cli("create-organisation", "openapi-other", "--name", "Another organisation").returncode == 0
    stranger = Staff(server, "other-org-custodian", "custodian", organisation="openapi-other")
    their_code = requests.post(url + "/v1/enrollment-codes", json={}, headers=stranger.auth).json()["code"]
    their_phone = Phone(server, enrollment_code=their_code)
    theirs = their_phone.create_recording()
    for path in (f"/v1/recordings/{theirs.id}", f"/v1/recordings/{theirs.id}/status",
                 f"/v1/devices/{their_phone.device_id}", f"/v1/staff/{stranger.id}"):
        refused(get(path), 404, "not_found")
    for path in (f"/v1/devices/{their_phone.device_id}/revoke", f"/v1/enrollment-codes/{their_code}/revoke"):
        refused(post(path), 404, "not_found")
    refused(patch(f"/v1/staff/{stranger.id}", {"disabled": True}), 404, "not_found")
    assert get("/v1/recordings", device_id=their_phone.device_id).json()["recordings"] == []
    assert get("/v1/audit", recording_id=theirs.id).json()["entries"] == []
    their_staff = requests.get(url + "/v1/staff", headers=stranger.auth).json()["staff"]
    assert [a["username"] for a in their_staff] == ["other-org-custodian"]
    assert their_phone.device_id not in {d["device_id"] for d in get("/v1/devices", limit=200).json()["devices"]}
    assert_flow_seen(conformance, "organisation")


# -- copies for lawyers ----------------------------------------------------

def test_copies_for_lawyers_match_the_document(server, conformance):
    url = server.url
    lawyer = Staff(server, "copies-lawyer", "lawyer")
    other_lawyer = Staff(server, "copies-other-lawyer", "lawyer")
    custodian = Staff(server, "copies-custodian", "custodian")
    observer = Staff(server, "copies-observer", "observer")
    phone = Phone(server)
    recording = phone.create_recording()
    footage = b"what the phone saw, byte for byte"
    assert recording.put(0, recording.chunk(0, footage, final=True), final=True).status_code == 201

    def get(path: str, staff: Staff = lawyer, headers: dict | None = None, **params) -> requests.Response:
        return requests.get(url + path, params=params, headers={**staff.auth, **(headers or {})})

    def post(path: str, staff: Staff, headers: dict | None = None, **kwargs) -> requests.Response:
        return requests.post(url + path, headers={**staff.auth, **(headers or {})}, **kwargs)

    def refused(response: requests.Response, status: int, code: str) -> None:
        assert (response.status_code, error_of(response)) == (status, code), \
            f"{response.request.method} {response.request.url}"

    def listed(staff: Staff, **params) -> dict:
        answer = get("/v1/copy-requests", staff, **params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def ids(page: dict) -> list[str]:
        return [request["request_id"] for request in page["copy_requests"]]

    # A lawyer asks; the fields are checked before the recording is looked up.
    ask_path = f"/v1/recordings/{recording.id}/copy-requests"
    body = {"case_reference": "  People v. Roe, No. 26-CR-77  ",
            "purpose": "Disclosure to defence counsel.\n\tExhibit 4."}
    asked = post(ask_path, lawyer, json=body)
    assert asked.status_code == 201
    request = asked.json()
    rid = request["request_id"]
    assert (request["state"], request["recording_id"], request["requested_by"]) == \
        ("pending", recording.id, "copies-lawyer")
    assert (request["case_reference"], request["purpose"]) == ("People v. Roe, No. 26-CR-77", body["purpose"].strip())
    assert [request[field] for field in ("decided_by", "decided_at", "decision_reason", "manifest_version",
                                         "failure", "bundle")] == [None] * 6
    request_path = f"/v1/copy-requests/{rid}"
    assert get(request_path).json() == request
    for sent, code in [
        ({"purpose": "x"}, "invalid_case_reference"), ({**body, "case_reference": "a\nb"}, "invalid_case_reference"),
        ({**body, "case_reference": "x" * 201}, "invalid_case_reference"), ({**body, "purpose": ""}, "invalid_purpose"),
        ({**body, "purpose": "x" * 2001}, "invalid_purpose"), ({**body, "purpose": 7}, "invalid_purpose"),
        ({**body, "pad": "x" * 70_000}, "body_too_large"),
    ]:
        refused(post(f"/v1/recordings/{uuid.uuid4()}/copy-requests", lawyer, json=sent), 400, code)
    refused(post(ask_path, lawyer, data="[]", headers={"Content-Type": "application/json"}), 400, "invalid_body")
    refused(post(ask_path, lawyer), 400, "invalid_body")
    refused(post(f"/v1/recordings/{recording.id.upper()}/copy-requests", lawyer, json=body), 400,
            "invalid_recording_id")
    refused(post(f"/v1/recordings/{uuid.uuid4()}/copy-requests", lawyer, json=body), 404, "not_found")
    for not_a_lawyer in (custodian, observer):
        refused(post(ask_path, not_a_lawyer, json=body), 403, "forbidden")
    refused(requests.post(url + ask_path, json=body, headers=phone.auth), 403, "forbidden")
    refused(requests.post(url + ask_path, json=body), 401, "unauthorized")
    second = post(ask_path, lawyer, json={**body, "purpose": "A second look."}).json()
    denied_path = f"/v1/copy-requests/{second['request_id']}"

    # Who sees which requests: a lawyer their own, a custodian the organisation's.
    refused(get(request_path, other_lawyer), 404, "not_found")
    refused(get(request_path + "/bundle", other_lawyer), 404, "not_found")
    refused(get(f"/v1/copy-requests/{uuid.uuid4()}"), 404, "not_found")
    refused(get(f"/v1/copy-requests/{uuid.uuid4()}/bundle", custodian), 404, "not_found")
    refused(get("/v1/copy-requests/not-a-uuid"), 400, "invalid_request_id")
    refused(get(f"/v1/copy-requests/{rid.upper()}/bundle"), 400, "invalid_request_id")
    refused(get(request_path, observer), 403, "forbidden")
    refused(get(request_path + "/bundle", observer), 403, "forbidden")
    refused(requests.get(url + request_path), 401, "unauthorized")
    both = {rid, second["request_id"]}
    assert set(ids(listed(lawyer, recording_id=recording.id))) == both
    assert listed(other_lawyer, recording_id=recording.id) == {"copy_requests": [], "next_cursor": None}
    assert set(ids(listed(custodian, recording_id=recording.id, state="pending"))) == both
    assert ids(listed(custodian, recording_id=recording.id, state="ready")) == []
    assert ids(listed(custodian, recording_id=str(uuid.uuid4()))) == []
    first_page = listed(lawyer, recording_id=recording.id, limit=1)
    assert len(first_page["copy_requests"]) == 1 and first_page["next_cursor"]
    last_page = listed(lawyer, recording_id=recording.id, limit=1, cursor=first_page["next_cursor"])
    assert set(ids(first_page) + ids(last_page)) == both and last_page["next_cursor"] is None
    assert first_page["copy_requests"][0]["created_at"] >= last_page["copy_requests"][0]["created_at"]
    for params, code in [
        ({"state": "lost"}, "invalid_state"), ({"state": "pending,ready"}, "invalid_state"),
        ({"recording_id": "abc"}, "invalid_recording_id"), ({"limit": "0"}, "invalid_limit"),
        ({"limit": "201"}, "invalid_limit"), ({"cursor": "garbage"}, "invalid_cursor"),
    ]:
        refused(get("/v1/copy-requests", custodian, **params), 400, code)
    refused(get("/v1/copy-requests", observer), 403, "forbidden")
    refused(requests.get(url + "/v1/copy-requests", headers=phone.auth), 403, "forbidden")
    refused(requests.get(url + "/v1/copy-requests"), 401, "unauthorized")

    # Nothing to download before a custodian decides; only custodians decide.
    refused(get(request_path + "/bundle"), 409, "bundle_not_ready")
    refused(post(request_path + "/approve", lawyer), 403, "forbidden")
    refused(post(denied_path + "/deny", lawyer, json={"reason": "mine"}), 403, "forbidden")
    refused(requests.post(url + request_path + "/approve"), 401, "unauthorized")
    refused(post(request_path + "/approve", custodian, json={"reason": 7}), 400, "invalid_reason")
    refused(post(request_path + "/approve", custodian, data="yes", headers={"Content-Type": "text/plain"}), 400,
            "invalid_body")
    refused(post(denied_path + "/deny", custodian, json={}), 400, "invalid_reason")
    refused(post(denied_path + "/deny", custodian, json={"reason": None}), 400, "invalid_reason")
    refused(post(denied_path + "/deny", custodian), 400, "invalid_body")
    refused(post("/v1/copy-requests/abc/approve", custodian), 400, "invalid_request_id")
    refused(post("/v1/copy-requests/abc/deny", custodian, json={"reason": "no"}), 400, "invalid_request_id")
    refused(post(f"/v1/copy-requests/{uuid.uuid4()}/approve", custodian), 404, "not_found")
    refused(post(f"/v1/copy-requests/{uuid.uuid4()}/deny", custodian, json={"reason": "no"}), 404, "not_found")

    # A denial is final: no bundle, no second decision.
    denied = post(denied_path + "/deny", custodian, json={"reason": "No case is open for this."})
    assert denied.status_code == 200
    assert (denied.json()["state"], denied.json()["decided_by"], denied.json()["decision_reason"]) == \
        ("denied", "copies-custodian", "No case is open for this.")
    assert denied.json()["decided_at"] and denied.json()["bundle"] is None
    refused(post(denied_path + "/approve", custodian), 409, "copy_request_not_pending")
    refused(post(denied_path + "/deny", custodian, json={"reason": "Again."}), 409, "copy_request_not_pending")
    refused(get(denied_path + "/bundle"), 409, "bundle_not_ready")

    # An approval (the body is optional), then the scheduler builds the bundle.
    approved = post(request_path + "/approve", custodian)
    assert approved.status_code == 200
    assert approved.json()["state"] in ("approved", "building", "ready")
    assert (approved.json()["decided_by"], approved.json()["decision_reason"]) == ("copies-custodian", None)
    refused(post(request_path + "/approve", custodian, json={"reason": "Twice."}), 409, "copy_request_not_pending")
    ready = server.wait_for(lambda: (r := get(request_path).json())["state"] in ("ready", "failed") and r)
    assert ready["state"] == "ready", ready
    refused(post(request_path + "/deny", custodian, json={"reason": "Changed my mind."}), 409,
            "copy_request_not_pending")
    assert ready["manifest_version"] == 1 and ready["failure"] is None
    assert ids(listed(custodian, recording_id=recording.id, state="ready")) == [rid]
    bundle = ready["bundle"]
    assert bundle["url"] == request_path + "/bundle" and bundle["filename"].startswith(f"witness-copy-{recording.id}-")

    # The download, whole, resumed, unchanged, and out of range.
    whole = get(bundle["url"])
    assert whole.status_code == 200 and whole.headers["Content-Type"] == "application/zip"
    assert (len(whole.content), hashlib.sha256(whole.content).hexdigest()) == (bundle["size"], bundle["sha256"])
    assert whole.headers["ETag"] == f'"{bundle["sha256"]}"'
    assert whole.headers["Content-Disposition"] == f'attachment; filename="{bundle["filename"]}"'
    with zipfile.ZipFile(io.BytesIO(whole.content)) as bundle_zip:
        names = set(bundle_zip.namelist())
        folder = f"witness-copy-{rid}/"
        assert {folder + name for name in ("footage.mp4", "manifests/v1/manifest.json", "manifests/v1/manifest.sig",
                                           "manifests/v1/manifest.tsr", "signing.pub.pem", "tsa-chain.pem",
                                           "custody-log.jsonl", "custody-log.jsonl.tsr", "CERTIFICATION.md",
                                           "VERIFY.md", "copy.json", "copy.json.sig")} <= names
        assert bundle_zip.read(folder + "footage.mp4") == footage
        assert b"People v. Roe" in bundle_zip.read(folder + "copy.json")
    size = bundle["size"]
    resumed = get(bundle["url"], headers={"Range": "bytes=100-", "If-Range": whole.headers["ETag"]})
    assert resumed.status_code == 206 and resumed.content == whole.content[100:]
    assert resumed.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    changed = get(bundle["url"], headers={"Range": "bytes=100-", "If-Range": '"another zip"'})
    assert changed.status_code == 200 and changed.content == whole.content
    several = get(bundle["url"], headers={"Range": "bytes=0-1,5-6"})  # ignored: the whole zip
    assert several.status_code == 200 and several.content == whole.content
    past_the_end = get(bundle["url"], headers={"Range": f"bytes={size}-"})
    refused(past_the_end, 416, "range_not_satisfiable")
    assert past_the_end.headers["Content-Range"] == f"bytes */{size}"
    by_custodian = get(bundle["url"], custodian)
    assert by_custodian.status_code == 200 and by_custodian.content == whole.content

    # Every step is in the recording's audit log.
    entries = get("/v1/audit", custodian, recording_id=recording.id, order="asc").json()["entries"]
    steps = [(e["action"], e["actor"], e["detail"].get("request_id")) for e in entries
             if e["action"].startswith("copy.")]
    assert steps[:6] == [
        ("copy.requested", "staff:copies-lawyer", rid),
        ("copy.requested", "staff:copies-lawyer", second["request_id"]),
        ("copy.denied", "staff:copies-custodian", second["request_id"]),
        ("copy.approved", "staff:copies-custodian", rid), ("copy.build_started", "system", rid),
        ("copy.ready", "system", rid)]
    assert {action for action, _, _ in steps[6:]} == {"copy.downloaded"}
    assert {actor for _, actor, _ in steps[6:]} == {"staff:copies-lawyer", "staff:copies-custodian"}
    details = {(e["action"], e["detail"].get("request_id")): e["detail"] for e in entries}
    assert details[("copy.requested", rid)]["case_reference"] == "People v. Roe, No. 26-CR-77"
    assert details[("copy.requested", rid)]["purpose"] == body["purpose"].strip()
    assert details[("copy.denied", second["request_id"])]["reason"] == "No case is open for this."
    assert details[("copy.ready", rid)]["bundle_sha256"] == bundle["sha256"]
    assert_flow_seen(conformance, "copies")


def test_a_required_second_factor_matches_the_document(strict_server, strict_conformance):
    url = strict_server.url
    custodian = Staff(strict_server, "strict-custodian", "custodian")  # logging in and /me still answer
    assert custodian.me()["totp_setup_required"] is True
    phone = Phone(strict_server)
    recording = phone.create_recording()
    for path in ("/v1/staff", "/v1/recordings", "/v1/audit", f"/v1/recordings/{recording.id}",
                 f"/v1/recordings/{recording.id}/status", f"/v1/recordings/{recording.id}/manifest",
                 f"/v1/recordings/{recording.id}/manifest.sig", f"/v1/recordings/{recording.id}/media",
                 "/v1/copy-requests", f"/v1/copy-requests/{uuid.uuid4()}", f"/v1/copy-requests/{uuid.uuid4()}/bundle"):
        blocked = requests.get(url + path, headers=custodian.auth)
        assert (blocked.status_code, error_of(blocked)) == (403, "totp_setup_required"), path
    for verdict in ("approve", "deny"):
        blocked = requests.post(f"{url}/v1/copy-requests/{uuid.uuid4()}/{verdict}", json={"reason": "Because."},
                                headers=custodian.auth)
        assert (blocked.status_code, error_of(blocked)) == (403, "totp_setup_required"), verdict
    # Asking for a copy is a lawyer's: the role is refused before the second factor is looked at.
    not_a_lawyer = requests.post(f"{url}/v1/recordings/{recording.id}/copy-requests", headers=custodian.auth,
                                 json={"case_reference": "A case", "purpose": "A purpose"})
    assert (not_a_lawyer.status_code, error_of(not_a_lawyer)) == (403, "forbidden")

    setup = requests.post(url + "/v1/auth/totp", headers=custodian.auth)
    assert setup.status_code == 200
    secret = base64.b32decode(setup.json()["secret"] + "=" * (-len(setup.json()["secret"]) % 8))
    confirmed = requests.post(url + "/v1/auth/totp/confirm", headers=custodian.auth,
                              json={"code": current_code(secret, time.time())})
    assert confirmed.status_code == 200
    # The same session goes on, now with the whole API.
    assert custodian.me()["totp_setup_required"] is False
    assert requests.get(url + "/v1/staff", headers=custodian.auth).status_code == 200
    assert requests.post(url + "/v1/auth/logout", headers=custodian.auth).status_code == 204
    assert_flow_seen(strict_conformance, "second factor")


def test_the_operator_endpoints_match_the_document(server, conformance, metrics_server, metrics_conformance):
    assert requests.get(server.url + "/healthz").json() == {"status": "ok"}
    assert requests.get(server.url + "/metrics").status_code == 404  # no token configured there
    metrics_server.wait_for(lambda: requests.get(metrics_server.url + "/readyz").status_code == 200)
    assert requests.get(metrics_server.url + "/metrics").status_code == 401
    assert requests.get(metrics_server.url + "/metrics", headers=bearer("not the token at all")).status_code == 401
    scraped = requests.get(metrics_server.url + "/metrics", headers=bearer(METRICS_TOKEN))
    assert scraped.status_code == 200 and "witness_disk_free_bytes" in scraped.text
    openmetrics = requests.get(metrics_server.url + "/metrics", headers={
        **bearer(METRICS_TOKEN), "Accept": "application/openmetrics-text; version=1.0.0"})
    assert openmetrics.status_code == 200 and openmetrics.text.rstrip().endswith("# EOF")
    missing = (FLOWS["operator"] - conformance.seen_operations()) - metrics_conformance.seen_operations()
    assert missing == set(), f"the operator flow never got these answers: {sorted(missing)}"
