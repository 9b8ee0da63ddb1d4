"""Every cell of docs/permissions.md, sent to a real server.

The matrix is read from the page itself, so the page and the server cannot
drift apart: a cell whose answer changes fails here until the page is
changed too, and an endpoint missing from the page (or from this file) fails
`test_the_matrix_covers_every_route`.

Organisation A is the default organisation, holding the recording, devices,
accounts and codes the requests aim at; organisation B is the "other
organisation" column.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import re
import time
import uuid
from dataclasses import dataclass
from typing import Callable

import pytest
import requests

from crypto.totp import current_code
from tests.support import MANY_LOGINS, PROJECT_ROOT, Phone, Recording, ServerProcess, Staff, content_digest

MATRIX_PAGE = PROJECT_ROOT / "docs" / "permissions.md"
COLUMNS = ("anonymous", "device", "observer", "lawyer", "custodian", "expired token", "revoked token",
           "other organisation")
ROLES = ("device", "observer", "lawyer", "custodian")
STAFF_ROLES = ROLES[1:]
EXPECTED_401 = {"anonymous": "unauthorized", "expired token": "token_expired", "revoked token": "token_revoked"}


def read_matrix() -> dict[str, dict[str, str]]:
    rows = {}
    for line in MATRIX_PAGE.read_text("utf-8").splitlines():
        match = re.match(r"^\| `([A-Z]+ /\S+)` \|(.*)\|\s*$", line)
        if match:
            cells = [cell.strip() for cell in match.group(2).split("|")]
            assert len(cells) == len(COLUMNS), f"{match.group(1)}: {len(cells)} cells"
            rows[match.group(1)] = dict(zip(COLUMNS, cells))
    return rows


MATRIX = read_matrix()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Caller:
    headers: dict
    phone: Phone | None = None  # the calling device, for device endpoints
    recording: Recording | None = None  # a recording of that device, made before it was revoked


class World:
    """Organisations A and B with people, phones and a finalized recording."""

    def __init__(self, server):
        self.server = server
        self.numbers = itertools.count()
        self.a_staff = {role: Staff(server, f"perm-a-{role}", role) for role in STAFF_ROLES}
        made = server.cli("create-organisation", "perm-b", "--name", "Organisation B")
        assert made.returncode == 0, made.stderr
        self.b_staff = {role: Staff(server, f"perm-b-{role}", role, organisation="perm-b") for role in STAFF_ROLES}
        self.a_phone = Phone(server)
        self.b_phone = Phone(server, enrollment_code=self.new_code(self.b_staff["custodian"])["code"])
        self.a_code = self.new_code(self.a_staff["custodian"])
        self.recording = self.a_phone.create_recording()
        assert self.recording.put(0, self.recording.chunk(0)).status_code == 201
        assert self.recording.put(1, self.recording.chunk(1, final=True), final=True).status_code == 201
        server.wait_for(lambda: self.recording.status().json()["manifest_version"] == 1)

    def new_copy_request(self) -> dict:
        """A pending copy request by A's lawyer for A's recording."""
        answer = requests.post(f"{self.server.url}/v1/recordings/{self.recording.id}/copy-requests",
                               headers=self.a_staff["lawyer"].auth,
                               json={"case_reference": "perm case", "purpose": "matrix"})
        assert answer.status_code == 201, answer.text
        return answer.json()

    @functools.cached_property
    def ready_copy_request(self) -> dict:
        """A's lawyer's request, approved by A's custodian, its bundle built."""
        request = self.new_copy_request()
        answer = requests.post(f"{self.server.url}/v1/copy-requests/{request['request_id']}/approve",
                               headers=self.a_staff["custodian"].auth)
        assert answer.status_code == 200, answer.text

        def ready():
            found = requests.get(f"{self.server.url}/v1/copy-requests/{request['request_id']}",
                                 headers=self.a_staff["lawyer"].auth).json()
            return found if found["state"] == "ready" else None
        return self.server.wait_for(ready)

    def new_code(self, custodian: Staff) -> dict:
        answer = requests.post(self.server.url + "/v1/enrollment-codes", headers=custodian.auth, json={"note": "t"})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def new_staff(self, role: str, organisation: str = "a") -> Staff:
        custodian = (self.a_staff if organisation == "a" else self.b_staff)["custodian"]
        return Staff(self.server, f"perm-{organisation}-{role}-{next(self.numbers)}", role, made_by=custodian.token)

    def revoked_phone(self) -> tuple[Phone, Recording]:
        phone = Phone(self.server)
        recording = phone.create_recording()
        answer = requests.post(f"{self.server.url}/v1/devices/{phone.device_id}/revoke",
                               headers=self.a_staff["custodian"].auth)
        assert answer.status_code == 200, answer.text
        return phone, recording

    def caller(self, column: str, role: str, *, token: str = "access", fresh: str | None = None) -> Caller:
        """The headers (and device) of `column`, acting as `role` where the
        column does not name one."""
        if column == "anonymous":
            return Caller({})
        if column == "expired token":
            if role == "device":
                subject, claims = f"device:{self.a_phone.device_id}", {}
            else:
                subject, claims = f"staff:{self.a_staff[role].id}", {"gen": 0, "sid": str(uuid.uuid4())}
            forged = self.server.forged_token(subject, role, expires_in=-60, kind=token, **claims)
            return Caller(bearer(forged), self.a_phone)
        if column == "revoked token":
            if role == "device":
                phone, recording = self.revoked_phone()
                return Caller(bearer(phone.token if token == "access" else phone.refresh_token), phone, recording)
            tokens = self.a_staff[role].login()
            ended = requests.post(self.server.url + "/v1/auth/logout", headers=bearer(tokens["access_token"]))
            assert ended.status_code == 204, ended.text
            return Caller(bearer(tokens[f"{token}_token"]))
        organisation = "b" if column == "other organisation" else "a"
        role = role if column == "other organisation" else column
        if role == "device":
            phone = self.b_phone if organisation == "b" else self.a_phone
            return Caller(bearer(phone.token if token == "access" else phone.refresh_token), phone)
        staff = (self.b_staff if organisation == "b" else self.a_staff)[role]
        if fresh == "user":
            staff = self.new_staff(role, organisation)
        tokens = staff.login() if fresh == "session" else staff.tokens
        caller = Caller(bearer(tokens[f"{token}_token"]))
        caller.staff = staff
        return caller


@dataclass
class Call:
    method: str
    path: str
    kwargs: dict
    after: Callable[[requests.Response], None] | None = None  # further checks of what the user sees
    also_after_refusal: bool = False  # run `after` on a refusal too: it checks nothing changed


@dataclass
class Endpoint:
    build: Callable[[World, str, Caller], Call]
    token: str = "access"
    fresh: str | None = None  # "session": a new login; "user": a new account
    holds_a: Callable[[World, dict], bool] | None = None  # for lists: does the answer show A's things?


ENDPOINTS: dict[str, Endpoint] = {}


def endpoint(name: str, **options):
    def register(build):
        ENDPOINTS[name] = Endpoint(build, **options)
        return build
    return register


# -- public -----------------------------------------------------------------

@endpoint("GET /v1/keys")
def _keys(world, column, caller):
    return Call("GET", "/v1/keys", {})


@endpoint("GET /v1/openapi.json")
def _openapi(world, column, caller):
    return Call("GET", "/v1/openapi.json", {})


@endpoint("POST /v1/devices")
def _register(world, column, caller):
    return Call("POST", "/v1/devices", {"json": {}})


@endpoint("POST /v1/auth/login")
def _login(world, column, caller):
    staff = world.a_staff["observer"]
    return Call("POST", "/v1/auth/login", {"json": {"username": staff.username, "password": staff.password}})


# -- own account ---------------------------------------------------------------

@endpoint("POST /v1/auth/refresh", token="refresh")
def _refresh(world, column, caller):
    def works(answer):
        if answer.status_code == 200:  # the new access token is let in
            used = requests.get(f"{world.server.url}/v1/recordings/{world.recording.id}/status",
                                headers=bearer(answer.json()["access_token"]))
            assert used.status_code == (404 if column == "other organisation" else 200)
    return Call("POST", "/v1/auth/refresh", {}, works)


@endpoint("GET /v1/auth/me")
def _me(world, column, caller):
    def names_the_caller(answer):
        staff = getattr(caller, "staff", None)
        if staff is not None:
            assert answer.json()["username"] == staff.username
            assert answer.json()["organisation"]["slug"] == ("perm-b" if column == "other organisation" else "default")
    return Call("GET", "/v1/auth/me", {}, names_the_caller)


@endpoint("POST /v1/auth/logout", fresh="session")
def _logout(world, column, caller):
    def session_ended(answer):
        again = requests.get(world.server.url + "/v1/auth/me", headers=caller.headers)
        assert again.status_code == 401 and again.json()["error"] == "token_revoked"
    return Call("POST", "/v1/auth/logout", {}, session_ended)


@endpoint("POST /v1/auth/password", fresh="user")
def _password(world, column, caller):
    staff = getattr(caller, "staff", None)
    current = staff.password if staff else "pw-unknown-correct-horse"
    def takes_effect(answer):
        staff.password = "a brand new long password"
        staff.login()  # the new password works; asserts 200
    return Call("POST", "/v1/auth/password",
                {"json": {"current_password": current, "new_password": "a brand new long password"}}, takes_effect)


@endpoint("POST /v1/auth/totp", fresh="user")
def _totp(world, column, caller):
    def gives_a_secret(answer):
        assert answer.json()["otpauth_uri"].startswith("otpauth://totp/")
    return Call("POST", "/v1/auth/totp", {}, gives_a_secret)


@endpoint("POST /v1/auth/totp/confirm", fresh="user")
def _totp_confirm(world, column, caller):
    code = "000000"
    if getattr(caller, "staff", None) is not None:
        started = requests.post(world.server.url + "/v1/auth/totp", headers=caller.headers)
        assert started.status_code == 200, started.text
        secret = started.json()["secret"]
        code = current_code(base64.b32decode(secret + "=" * (-len(secret) % 8)), time.time())

    def second_factor_on(answer):
        staff = caller.staff
        refused = requests.post(world.server.url + "/v1/auth/login",
                                json={"username": staff.username, "password": staff.password})
        assert refused.status_code == 401 and refused.json()["error"] == "totp_required"
    return Call("POST", "/v1/auth/totp/confirm", {"json": {"code": code}}, second_factor_on)


@endpoint("POST /v1/auth/totp/remove", fresh="user")
def _totp_remove(world, column, caller):
    code = "000000"
    staff = getattr(caller, "staff", None)
    if staff is not None:
        started = requests.post(world.server.url + "/v1/auth/totp", headers=caller.headers)
        assert started.status_code == 200, started.text
        secret = started.json()["secret"]
        key = base64.b32decode(secret + "=" * (-len(secret) % 8))
        # Confirmed with the previous step's code (one step of drift is
        # allowed), so the current one is still unused for the removal.
        confirmed = requests.post(world.server.url + "/v1/auth/totp/confirm", headers=caller.headers,
                                  json={"code": current_code(key, time.time() - 30)})
        assert confirmed.status_code == 200, confirmed.text
        code = current_code(key, time.time())

    def second_factor_off(answer):
        assert answer.json() == {"totp_enabled": False}
        staff.login()  # the password alone logs in again; asserts 200
    return Call("POST", "/v1/auth/totp/remove", {"json": {"code": code}}, second_factor_off)


# -- devices -------------------------------------------------------------------

def _target_recording(world, caller) -> Recording:
    """A fresh recording of the calling phone's organisation-A owner: the
    revoked phone's own, else one of A's phone."""
    if caller.recording is not None:
        return caller.recording
    return world.a_phone.create_recording()


@endpoint("POST /v1/recordings")
def _create_recording(world, column, caller):
    body, _ = world.a_phone.recording_body()
    return Call("POST", "/v1/recordings", {"json": body})


@endpoint("PUT /v1/recordings/{recording_id}/chunks/{index}")
def _put_chunk(world, column, caller):
    recording = _target_recording(world, caller)
    body = recording.chunk(0)

    def stored_only_if_acknowledged(answer):
        held = requests.get(f"{world.server.url}/v1/recordings/{recording.id}/status",
                            headers=world.a_staff["custodian"].auth).json()["received"]
        assert held == ([[0, 0]] if answer.status_code == 201 else [])
    return Call("PUT", f"/v1/recordings/{recording.id}/chunks/0",
                {"data": body, "headers": {"Content-Type": "application/octet-stream",
                                           "Content-Digest": content_digest(body)}},
                stored_only_if_acknowledged, also_after_refusal=True)


@endpoint("GET /v1/recordings/{recording_id}/status")
def _status(world, column, caller):
    recording = caller.recording or world.recording
    return Call("GET", f"/v1/recordings/{recording.id}/status", {})


@endpoint("POST /v1/recordings/{recording_id}/complete")
def _complete(world, column, caller):
    recording = _target_recording(world, caller)
    return Call("POST", f"/v1/recordings/{recording.id}/complete", {})


# -- staff retrieval -------------------------------------------------------------

@endpoint("GET /v1/recordings", holds_a=lambda world, body: any(
    item["recording_id"] == world.recording.id for item in body["recordings"]))
def _list_recordings(world, column, caller):
    return Call("GET", "/v1/recordings", {"params": {"limit": 200}})


@endpoint("GET /v1/recordings/{recording_id}")
def _detail(world, column, caller):
    def shows_the_chunks(answer):
        assert [chunk["index"] for chunk in answer.json()["chunks"]] == [0, 1]
    return Call("GET", f"/v1/recordings/{world.recording.id}", {}, shows_the_chunks)


@endpoint("GET /v1/recordings/{recording_id}/media")
def _media(world, column, caller):
    def is_the_footage(answer):
        assert answer.content == b"".join(f"piece {i} ".encode() * 50 for i in (0, 1))
    return Call("GET", f"/v1/recordings/{world.recording.id}/media", {}, is_the_footage)


@endpoint("GET /v1/recordings/{recording_id}/manifest")
def _manifest(world, column, caller):
    return Call("GET", f"/v1/recordings/{world.recording.id}/manifest", {})


@endpoint("GET /v1/recordings/{recording_id}/manifest.sig")
def _manifest_sig(world, column, caller):
    return Call("GET", f"/v1/recordings/{world.recording.id}/manifest.sig", {})


@endpoint("GET /v1/recordings/{recording_id}/manifest.tsr")
def _manifest_tsr(world, column, caller):
    return Call("GET", f"/v1/recordings/{world.recording.id}/manifest.tsr", {})


# -- copies ---------------------------------------------------------------------

@endpoint("POST /v1/recordings/{recording_id}/copy-requests")
def _request_copy(world, column, caller):
    def made_only_if_allowed(answer):
        mine = requests.get(f"{world.server.url}/v1/copy-requests", params={"state": "pending", "limit": 200},
                            headers=world.a_staff["custodian"].auth).json()["copy_requests"]
        assert any(r["case_reference"] == case for r in mine) is (answer.status_code == 201)
    case = f"perm case {next(world.numbers)}"
    return Call("POST", f"/v1/recordings/{world.recording.id}/copy-requests",
                {"json": {"case_reference": case, "purpose": "matrix"}}, made_only_if_allowed,
                also_after_refusal=True)


@endpoint("GET /v1/copy-requests", holds_a=lambda world, body: any(
    item["request_id"] == world.ready_copy_request["request_id"] for item in body["copy_requests"]))
def _list_copy_requests(world, column, caller):
    world.ready_copy_request  # noqa: B018 - made before the list is read
    return Call("GET", "/v1/copy-requests", {"params": {"limit": 200}})


@endpoint("GET /v1/copy-requests/{request_id}")
def _copy_request(world, column, caller):
    request_id = world.ready_copy_request["request_id"]
    return Call("GET", f"/v1/copy-requests/{request_id}", {})


def _decision(world, verdict: str, state: str) -> Call:
    request_id = world.new_copy_request()["request_id"]

    def decided_only_if_allowed(answer):
        now = requests.get(f"{world.server.url}/v1/copy-requests/{request_id}",
                           headers=world.a_staff["custodian"].auth).json()["state"]
        assert (now != "pending") is (answer.status_code == 200)
        assert now in (("pending",) if answer.status_code != 200 else (state, "building", "ready"))
    return Call("POST", f"/v1/copy-requests/{request_id}/{verdict}", {"json": {"reason": "matrix"}},
                decided_only_if_allowed, also_after_refusal=True)


@endpoint("POST /v1/copy-requests/{request_id}/approve")
def _approve(world, column, caller):
    return _decision(world, "approve", "approved")


@endpoint("POST /v1/copy-requests/{request_id}/deny")
def _deny(world, column, caller):
    return _decision(world, "deny", "denied")


@endpoint("GET /v1/copy-requests/{request_id}/bundle")
def _bundle(world, column, caller):
    request = world.ready_copy_request

    def is_the_bundle(answer):
        assert hashlib.sha256(answer.content).hexdigest() == request["bundle"]["sha256"]
    return Call("GET", f"/v1/copy-requests/{request['request_id']}/bundle", {}, is_the_bundle)


# -- custodians ----------------------------------------------------------------

def _role_of(world, staff: Staff) -> str:
    answer = requests.get(f"{world.server.url}/v1/staff/{staff.id}", headers=world.a_staff["custodian"].auth)
    return answer.json()["role"]


@endpoint("GET /v1/staff", holds_a=lambda world, body: any(
    item["username"].startswith("perm-a-") for item in body["staff"]))
def _list_staff(world, column, caller):
    return Call("GET", "/v1/staff", {})


@endpoint("POST /v1/staff")
def _create_staff(world, column, caller):
    username = f"perm-new-{next(world.numbers)}"

    def lands_in_the_callers_organisation(answer):
        in_a = answer.json()["organisation_id"] == 1
        assert in_a is (column != "other organisation")
    return Call("POST", "/v1/staff", {"json": {"username": username, "role": "observer",
                                               "password": "a long enough password"}},
                lands_in_the_callers_organisation)


@endpoint("GET /v1/staff/{staff_id}")
def _staff_account(world, column, caller):
    return Call("GET", f"/v1/staff/{world.a_staff['observer'].id}", {})


@endpoint("PATCH /v1/staff/{staff_id}")
def _update_staff(world, column, caller):
    target = world.new_staff("observer")

    def role_changed_only_if_allowed(answer):
        assert _role_of(world, target) == ("lawyer" if answer.status_code == 200 else "observer")
    return Call("PATCH", f"/v1/staff/{target.id}", {"json": {"role": "lawyer"}}, role_changed_only_if_allowed, also_after_refusal=True)


@endpoint("GET /v1/devices", holds_a=lambda world, body: any(
    item["device_id"] == world.a_phone.device_id for item in body["devices"]))
def _list_devices(world, column, caller):
    return Call("GET", "/v1/devices", {"params": {"limit": 200}})


@endpoint("GET /v1/devices/{device_id}")
def _device(world, column, caller):
    return Call("GET", f"/v1/devices/{world.a_phone.device_id}", {})


@endpoint("POST /v1/devices/{device_id}/revoke")
def _revoke_device(world, column, caller):
    target = Phone(world.server)

    def revoked_only_if_allowed(answer):
        refreshed = requests.post(world.server.url + "/v1/auth/refresh", headers=bearer(target.refresh_token))
        assert refreshed.status_code == (401 if answer.status_code == 200 else 200)
    return Call("POST", f"/v1/devices/{target.device_id}/revoke", {}, revoked_only_if_allowed, also_after_refusal=True)


@endpoint("GET /v1/enrollment-codes", holds_a=lambda world, body: any(
    item["code"] == world.a_code["code"] for item in body["enrollment_codes"]))
def _list_codes(world, column, caller):
    return Call("GET", "/v1/enrollment-codes", {})


@endpoint("POST /v1/enrollment-codes")
def _create_code(world, column, caller):
    def enrolls_into_the_callers_organisation(answer):
        phone = Phone(world.server, enrollment_code=answer.json()["code"])
        seen_by_a = requests.get(f"{world.server.url}/v1/devices/{phone.device_id}",
                                 headers=world.a_staff["custodian"].auth)
        assert seen_by_a.status_code == (404 if column == "other organisation" else 200)
    return Call("POST", "/v1/enrollment-codes", {"json": {"note": "street team"}},
                enrolls_into_the_callers_organisation)


@endpoint("POST /v1/enrollment-codes/{code}/revoke")
def _revoke_code(world, column, caller):
    code = world.new_code(world.a_staff["custodian"])["code"]

    def revoked_only_if_allowed(answer):
        enrolled = requests.post(world.server.url + "/v1/devices", json={"enrollment_code": code})
        assert enrolled.status_code == (403 if answer.status_code == 200 else 201)
    return Call("POST", f"/v1/enrollment-codes/{code}/revoke", {}, revoked_only_if_allowed, also_after_refusal=True)


@endpoint("GET /v1/audit", holds_a=lambda world, body: any(
    entry["recording_id"] == world.recording.id or entry["organisation_id"] == 1 for entry in body["entries"]))
def _audit(world, column, caller):
    return Call("GET", "/v1/audit", {"params": {"limit": 500}})


# -- the tests ------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The module's own server: the matrix logs in afresh for hundreds of
    cells (`MANY_LOGINS`)."""
    process = ServerProcess(tmp_path_factory.mktemp("server"), WITNESS_MAX_CHUNK_BYTES=1024 * 1024,
                            **MANY_LOGINS).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def world(server) -> World:
    return World(server)


def test_the_matrix_covers_every_route(make_app):
    app = make_app()
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue  # pages: tested in tests/pages
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        served |= {f"{method} {path}" for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served - set(MATRIX) == set(), "routes missing from docs/permissions.md"
    assert set(MATRIX) - served == set(), "docs/permissions.md lists routes that do not exist"
    assert set(MATRIX) == set(ENDPOINTS), "every row needs a request in this file"


def _first_allowed_role(row: dict) -> str:
    return next(role for role in ROLES if row[role].startswith("2"))


@pytest.mark.parametrize("name,column", [(name, column) for name in MATRIX for column in COLUMNS],
                         ids=[f"{name} [{column}]" for name in MATRIX for column in COLUMNS])
def test_cell(world, name, column):
    cell, spec = MATRIX[name], ENDPOINTS[name]
    expected = MATRIX[name][column]
    status = int(expected.split(",")[0].split()[0])
    caller = world.caller(column, _first_allowed_role(cell), token=spec.token, fresh=spec.fresh)
    call = spec.build(world, column, caller)
    answer = requests.request(call.method, world.server.url + call.path,
                              headers={**call.kwargs.pop("headers", {}), **caller.headers}, **call.kwargs)
    assert answer.status_code == status, f"{name} as {column}: {answer.status_code} {answer.text[:300]}"
    if status >= 400:
        code = {401: EXPECTED_401.get(column), 403: "forbidden", 404: "not_found"}[status]
        assert answer.json()["error"] == code, answer.text
    if spec.holds_a is not None and status == 200:
        # A's callers see A's things; B's see none of them.
        assert spec.holds_a(world, answer.json()) is ("none of A's" not in expected)
    if call.after is not None and (status < 400 or call.also_after_refusal):
        call.after(answer)
