"""The OpenAPI document against the real server.

The document is only worth something if it says what the server does. These
tests fetch it from a running gunicorn server, compare its operations with the
app's URL rules in both directions, and then drive real flows over HTTP. Every
answer the server gives while a test runs (those sent by `tests.support`
helpers included) is checked against the document: the status must be one it
lists for that operation, a JSON body must validate against the schema it
gives for that status, and documented required headers must be present.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import time
import uuid
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
from tests.support import Phone, Recording, b64url, content_digest

DOCUMENT_URI = "urn:witness:openapi.json"
IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}
MIB = 1024 * 1024  # the `server` fixture's WITNESS_MAX_CHUNK_BYTES


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


def _media_matches(actual: str, documented: str) -> bool:
    kind, _, sub = documented.partition("/")
    actual_kind, _, actual_sub = actual.partition("/")
    return (kind in ("*", actual_kind)) and (sub in ("*", actual_sub))


@pytest.fixture(scope="module")
def document(server) -> dict:
    answer = requests.get(server.url + "/v1/openapi.json")
    assert answer.status_code == 200
    return answer.json()


@pytest.fixture
def conformance(server, document, monkeypatch) -> Conformance:
    """Every answer from `server` during the test is checked, including
    answers to requests that `tests.support` helpers make themselves."""
    checker = Conformance(document, server.url)
    original_send = requests.Session.send

    def send(session, prepared, **kwargs):
        response = original_send(session, prepared, **kwargs)
        if prepared.url.startswith(server.url + "/"):
            checker.check(response)
        return response

    monkeypatch.setattr(requests.Session, "send", send)
    return checker


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
        if rule.endpoint == "static":
            continue
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

    # Every operation of the document was exercised by this flow.
    exercised = {(method, template) for method, template, _ in conformance.seen}
    assert conformance.documented_operations() - exercised == set()
    wanted = {201, 200, 202, 206, 400, 403, 404, 409, 413, 416, 422, 401}
    assert wanted - {status for _, _, status in conformance.seen} == set()


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
